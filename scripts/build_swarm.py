#!/usr/bin/env python3
"""Build a swarm from scratch: data -> training -> registry -> evaluation -> promotion -> router.

Every step is a `locomlx` command (printed before it runs) and is skipped when its output already
exists, so an interrupted build continues where it stopped; --retrain starts the adapters over.

    python scripts/build_swarm.py               # the shipped library (timed in the README, on a 2-core CPU)
    python scripts/build_swarm.py --only sentiment-rt --retrain
    python scripts/build_swarm.py --reevaluate  # every score again from the committed adapters
    python scripts/build_swarm.py --set scaling # libraries/scaling-20: 20 specialists in 20 domains
                                                # (the scaling study, scripts/research/scaling_study.py)

Data comes from pinned PyPI/npm packages (scripts/data/sources.py); each adapter's TRAINING_LOG.md
records the source, licence and processing. Training settings: configs/swarm.yaml.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from locomlx.data.training_log import RUN_MARKER

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "data"))
from reasoning_gym_tasks import TASKS  # noqa: E402  (scripts/data is on the path from here on)

LOCOMLX = str(Path(sys.executable).parent / "locomlx")
EVAL_MAX_TOKENS = 64  # room for the base model's chatty answers; the adapters answer in a few tokens
OOD_LIMIT = 100  # out-of-domain check on the first 100 examples of each other benchmark (time on a CPU)


@dataclass(frozen=True)
class Specialist:
    name: str
    domain: str
    builder: str  # module in scripts/data with build(seed) -> (train, benchmark), or build(task, seed) with `task`
    description: str
    keywords: tuple[str, ...]
    semester: str = "2026-fall"
    train_rows: int = 500  # use only the first N training examples (with replay, ~160 steps: minutes on a CPU)
    train_flags: tuple[str, ...] = ()  # on top of configs/swarm.yaml
    task: str | None = None  # for builders of several domains (scripts/data/reasoning_gym_tasks.py)


SWARM = (
    Specialist("sentiment-rt", "sentiment", "sentiment_rt", "Movie-review sentiment: positive or negative",
               ("review", "movie", "film", "sentiment", "positive or negative: 2")),
    Specialist("spam-assassin", "spam", "spam_assassin", "E-mail spam detection: spam or legitimate",
               ("spam: 2", "e-mail", "email", "subject", "unsubscribe", "click here")),
    Specialist("summary-xsum", "summary", "xsum_summary", "One-sentence summaries of news articles",
               ("summarize", "summary", "news article", "in one sentence")),
    # Twice the replayed questions per domain (with 50 it loses 0.12 on spam, answering e-mails with a number)
    # and three epochs (with one, its gain, +0.03, is not significant).
    Specialist("math-chainsum", "math", "chain_sum_math",
               "Sums and differences of small integers; replies with the number",
               ("arithmetic", "plus", "minus", "sum", "add", "subtract", "calculate"),
               train_flags=("--replay-per-file", "100", "--epochs", "3")),
    # Last semester's smaller sentiment adapter: a second adapter in one domain (leaderboard, ensembles, history).
    Specialist("sentiment-rt-spring", "sentiment", "sentiment_rt", "Movie-review sentiment (rank 4, 500 examples)",
               ("review", "movie", "film", "sentiment", "positive or negative: 2"), semester="2026-spring",
               train_rows=500, train_flags=("--lora-rank", "4", "--lora-alpha", "8", "--seed", "1")),
)

# The scaling library: the shipped domains' first adapters plus sixteen procedural skills, one domain each.
# With 19 other domains, 10 replayed questions from each (190, as many as the shipped adapters replay in all).
SCALING = (
    *(replace(s, train_flags=("--replay-per-file", "20", "--epochs", "3") if s.domain == "math"
              else ("--replay-per-file", "10")) for s in SWARM if s.name != "sentiment-rt-spring"),
    *(Specialist(domain, domain, "reasoning_gym_tasks", task.description, task.keywords, task=domain,
                 train_flags=("--replay-per-file", "10")) for domain, task in TASKS.items()),
)


@dataclass(frozen=True)
class Swarm:
    library: Path
    specialists: tuple[Specialist, ...]
    ood_limit: int  # out-of-domain examples per other benchmark


# 30 per other benchmark in the scaling library: 570 out-of-domain questions per adapter (100 each would be
# 1900, and the whole library's evaluation would grow with the square of its size).
SETS = {"shipped": Swarm(ROOT / "adapters", SWARM, OOD_LIMIT),
        "scaling": Swarm(ROOT / "libraries" / "scaling-20", SCALING, 30)}


def run(swarm: Swarm, *args: str) -> None:
    print(f"$ LOCOMLX_ADAPTERS={swarm.library.relative_to(ROOT)} locomlx " + " ".join(args), flush=True)
    subprocess.run([LOCOMLX, *args], check=True, cwd=ROOT, env={**os.environ, "LOCOMLX_ADAPTERS": str(swarm.library)})


def registry(swarm: Swarm) -> dict:
    import yaml
    path = swarm.library / "registry.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def builder(spec: Specialist):
    return importlib.import_module(spec.builder)


def write_data(spec: Specialist) -> tuple[list[dict], list[dict]]:
    """data/<name>/{train,benchmark}.jsonl from the specialist's builder."""
    train, benchmark = builder(spec).build(spec.task) if spec.task else builder(spec).build()
    train = train[:spec.train_rows]
    importlib.import_module("sources").write_split(ROOT / "data" / spec.name, train, benchmark)
    return train, benchmark


def replay_files(swarm: Swarm, spec: Specialist) -> list[str]:
    """One training file per other domain: its questions, answered by the base model, are replayed while
    `spec` trains (locomlx/train/replay.py), which keeps the adapter near the base out of its domain."""
    firsts = {}
    for other in swarm.specialists:
        firsts.setdefault(other.domain, other)
    return [str(ROOT / "data" / other.name / "train.jsonl")
            for domain, other in firsts.items() if domain != spec.domain]


def build(swarm: Swarm, spec: Specialist, train: list[dict], benchmark: list[dict], retrain: bool) -> None:
    """Train the adapter unless it exists; its TRAINING_LOG.md gets the data's story."""
    data = ROOT / "data" / spec.name
    adapter = swarm.library / spec.name
    if retrain and adapter.exists():
        if spec.name in (registry(swarm).get("adapters") or {}):
            run(swarm, "adapters", "remove", spec.name, "--keep-files")
        shutil.rmtree(adapter)
    if not (adapter / "adapter_config.json").is_file():
        resume = ["--resume"] if Path(f"{adapter}.partial").is_dir() else []
        run(swarm, "train", "--config", "configs/swarm.yaml", "--dataset", str(data / "train.jsonl"),
            "--benchmark", str(data / "benchmark.jsonl"), "--output", str(adapter), *spec.train_flags,
            *[arg for file in replay_files(swarm, spec) for arg in ("--replay", file)], *resume)
    document(swarm, spec, train, benchmark)


def document(swarm: Swarm, spec: Specialist, train: list[dict], benchmark: list[dict]) -> None:
    """Write TRAINING_LOG.md's sources-and-review part from the data builder (idempotent)."""
    log = swarm.library / spec.name / "training" / "TRAINING_LOG.md"
    text = log.read_text(encoding="utf-8")
    head = text[:text.index("## Sources and review")] if "## Sources and review" in text else text
    module = builder(spec)
    review = module.review(spec.task) if spec.task else module.REVIEW
    command = f"python scripts/data/{spec.builder}.py" + (f" {spec.task}" if spec.task else "")
    labels = lambda rows: ", ".join(f"{k}: {v}" for k, v in Counter(r["output"] for r in rows).most_common(4))  # noqa: E731
    section = f"""## Sources and review

Built by `{command}` (called by `scripts/build_swarm.py`), deterministic (seed 0):

```
{module.__doc__.strip()}
```

- **Counts**: {len(train)} training examples (most common outputs: {labels(train)}); {len(benchmark)} benchmark
  examples ({labels(benchmark)}). Training rows sharing most of their 8-word sequences with a benchmark row
  were dropped before sampling (`scripts/data/sources.py`), so `locomlx data check` finds no overlap.
- **Review**: {" ".join(review.split())}
- **Known limitations**: {" ".join(module.LIMITATIONS.split())}
"""
    if RUN_MARKER in text:  # the student's part of the log (the template) is the builder's story
        log.write_text(f"# Training log: {spec.name}\n\n{section}\n{text[text.index(RUN_MARKER):]}", encoding="utf-8")
    else:
        log.write_text(head + section, encoding="utf-8")


def register(swarm: Swarm, spec: Specialist) -> None:
    if spec.name not in (registry(swarm).get("adapters") or {}):
        keywords = [arg for k in spec.keywords for arg in ("--keyword", k)]
        run(swarm, "adapters", "install", str(swarm.library / spec.name), "--domain", spec.domain,
            "--semester", spec.semester, "--description", spec.description, "--author", "locomlx team", *keywords)


def _distinct_other_benchmarks(swarm: Swarm, spec: Specialist) -> int:
    own = (swarm.library / spec.name / "eval" / "benchmark.jsonl").read_bytes()
    return len({p.read_bytes() for p in swarm.library.glob("*/eval/benchmark.jsonl")} - {own})


def _complete(results: Path, others: int, ood_limit: int) -> bool:
    """A full evaluation: every benchmark example, and every other benchmark of the library out of domain."""
    if not results.is_file():
        return False
    data = json.loads(results.read_text())
    return (data["inference"].get("limit") is None and data["inference"].get("ood_limit") == ood_limit
            and len(data["ood"]) == others)


def evaluate(swarm: Swarm, spec: Specialist, again: bool = False) -> dict:
    """`locomlx eval` unless a complete results.json exists (or `again`); records the scores in the registry."""
    results = swarm.library / spec.name / "eval" / "results.json"
    limit = swarm.ood_limit
    if again or not _complete(results, _distinct_other_benchmarks(swarm, spec), limit):
        # Exit code 2 (FAIL) is a result too: it is recorded, and shapes the promotion below.
        code = subprocess.run([LOCOMLX, "eval", str(swarm.library / spec.name), "--max-tokens", str(EVAL_MAX_TOKENS),
                               "--ood-limit", str(limit)], cwd=ROOT,
                              env={**os.environ, "LOCOMLX_ADAPTERS": str(swarm.library)}).returncode
        if code not in (0, 2):
            sys.exit(f"evaluation of {spec.name} failed (exit {code})")
    run(swarm, "registry", "refresh", spec.name)
    return json.loads(results.read_text())


def promote_best(swarm: Swarm, results: dict[Specialist, dict]) -> None:
    """Per domain, the best adapter that passed becomes active. A domain where none passed gets its best
    adapter with a significant in-domain gain, forced and said so: the router keeps other domains'
    questions away from it, and `locomlx router eval` measures what a wrong route costs."""
    for domain in sorted({s.domain for s in results}):
        entries = {s.name: r for s, r in results.items() if s.domain == domain}
        passed = [n for n, r in entries.items() if r["passed"]]
        significant = [n for n, r in entries.items() if r["significant"]]
        best = lambda names: max(sorted(names), key=lambda n: entries[n]["adapter_score"])  # noqa: E731
        if passed:
            run(swarm, "promote", best(passed))
        elif significant:
            name = best(significant)
            print(f"{name}: significant in-domain gain but out-of-domain degradation "
                  f"{entries[name]['ood_degradation']:.3f} > 0.05: promoted with --force")
            run(swarm, "promote", name, "--force")
        else:
            print(f"{domain}: no adapter with a significant gain; the domain stays without a specialist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=sorted(SETS), default="shipped",
                        help="Which swarm: the shipped library (adapters/) or the scaling one (libraries/scaling-20).")
    parser.add_argument("--only", action="append", help="Build only this adapter (repeatable).")
    parser.add_argument("--retrain", action="store_true", help="Train the adapters again even if they exist.")
    parser.add_argument("--reevaluate", action="store_true",
                        help="Evaluate the adapters again even if their results exist (regenerates every score).")
    args = parser.parse_args()
    swarm = SETS[args.set]
    chosen = [s for s in swarm.specialists if not args.only or s.name in args.only]
    if not (swarm.library / "registry.yaml").is_file():
        run(swarm, "registry", "init", "--quantization", "Q4_1")
    importlib.import_module("general_queries").write(swarm.library / "router" / "general.jsonl")
    data = {spec: write_data(spec) for spec in swarm.specialists}  # every domain's data first: training replays them
    for spec in chosen:  # all adapters first: each evaluation checks the others' benchmarks (out of domain)
        build(swarm, spec, *data[spec], args.retrain)
        register(swarm, spec)
    promote_best(swarm, {spec: evaluate(swarm, spec, args.reevaluate) for spec in chosen})
    run(swarm, "router", "train")
    run(swarm, "registry", "validate")


if __name__ == "__main__":
    main()
