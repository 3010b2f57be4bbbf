#!/usr/bin/env python3
"""Build the shipped swarm from scratch: data -> training -> registry -> evaluation -> promotion -> router.

Every step is a `locomlx` command (printed before it runs) and is skipped when its output already
exists, so an interrupted build continues where it stopped; --retrain starts the adapters over.

    python scripts/build_swarm.py               # everything (timed in the README, on a 2-core CPU)
    python scripts/build_swarm.py --only sentiment-rt --retrain
    python scripts/build_swarm.py --reevaluate  # every score again from the committed adapters

Data comes from pinned PyPI/npm packages (scripts/data/sources.py); each adapter's TRAINING_LOG.md
records the source, licence and processing. Training settings: configs/swarm.yaml.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from locomlx.data.training_log import RUN_MARKER

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "data"))
LIBRARY = ROOT / "adapters"
LOCOMLX = str(Path(sys.executable).parent / "locomlx")
EVAL_MAX_TOKENS = 64  # room for the base model's chatty answers; the adapters answer in a few tokens
OOD_LIMIT = 100  # out-of-domain check on the first 100 examples of each other benchmark (time on a CPU)


@dataclass(frozen=True)
class Specialist:
    name: str
    domain: str
    builder: str  # module in scripts/data with build(seed) -> (train, benchmark)
    description: str
    keywords: tuple[str, ...]
    semester: str = "2026-fall"
    train_rows: int = 500  # use only the first N training examples (with replay, ~160 steps: minutes on a CPU)
    train_flags: tuple[str, ...] = ()  # on top of configs/swarm.yaml


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


def run(*args: str) -> None:
    print("$ locomlx " + " ".join(args), flush=True)
    subprocess.run([LOCOMLX, *args], check=True, cwd=ROOT)


def registry() -> dict:
    import yaml
    return yaml.safe_load((LIBRARY / "registry.yaml").read_text()) or {}


def write_data(spec: Specialist) -> tuple[list[dict], list[dict]]:
    """data/<name>/{train,benchmark}.jsonl from the specialist's builder."""
    train, benchmark = importlib.import_module(spec.builder).build()
    train = train[:spec.train_rows]
    importlib.import_module("sources").write_split(ROOT / "data" / spec.name, train, benchmark)
    return train, benchmark


def replay_files(spec: Specialist) -> list[str]:
    """One training file per other domain: its questions, answered by the base model, are replayed while
    `spec` trains (locomlx/train/replay.py), which keeps the adapter near the base out of its domain."""
    firsts = {}
    for other in SWARM:
        firsts.setdefault(other.domain, other)
    return [str(ROOT / "data" / other.name / "train.jsonl")
            for domain, other in firsts.items() if domain != spec.domain]


def build(spec: Specialist, train: list[dict], benchmark: list[dict], retrain: bool) -> None:
    """Train the adapter unless it exists; its TRAINING_LOG.md gets the data's story."""
    data = ROOT / "data" / spec.name
    adapter = LIBRARY / spec.name
    if retrain and adapter.exists():
        if spec.name in (registry().get("adapters") or {}):
            run("adapters", "remove", spec.name, "--keep-files")
        shutil.rmtree(adapter)
    if not (adapter / "adapter_config.json").is_file():
        resume = ["--resume"] if Path(f"{adapter}.partial").is_dir() else []
        run("train", "--config", "configs/swarm.yaml", "--dataset", str(data / "train.jsonl"),
            "--benchmark", str(data / "benchmark.jsonl"), "--output", str(adapter), *spec.train_flags,
            *[arg for file in replay_files(spec) for arg in ("--replay", file)], *resume)
    document(spec, train, benchmark)


def document(spec: Specialist, train: list[dict], benchmark: list[dict]) -> None:
    """Write TRAINING_LOG.md's sources-and-review part from the data builder (idempotent)."""
    log = LIBRARY / spec.name / "training" / "TRAINING_LOG.md"
    text = log.read_text(encoding="utf-8")
    head = text[:text.index("## Sources and review")] if "## Sources and review" in text else text
    builder = importlib.import_module(spec.builder)
    labels = lambda rows: ", ".join(f"{k}: {v}" for k, v in Counter(r["output"] for r in rows).most_common(4))  # noqa: E731
    section = f"""## Sources and review

Built by `python scripts/data/{spec.builder}.py` (called by `scripts/build_swarm.py`), deterministic (seed 0):

```
{builder.__doc__.strip()}
```

- **Counts**: {len(train)} training examples (most common outputs: {labels(train)}); {len(benchmark)} benchmark
  examples ({labels(benchmark)}). Training rows sharing most of their 8-word sequences with a benchmark row
  were dropped before sampling (`scripts/data/sources.py`), so `locomlx data check` finds no overlap.
- **Manual review**: {" ".join(builder.REVIEW.split())}
- **Known limitations**: {" ".join(builder.LIMITATIONS.split())}
"""
    if RUN_MARKER in text:  # the student's part of the log (the template) is the builder's story
        log.write_text(f"# Training log: {spec.name}\n\n{section}\n{text[text.index(RUN_MARKER):]}", encoding="utf-8")
    else:
        log.write_text(head + section, encoding="utf-8")


def register(spec: Specialist) -> None:
    if spec.name not in (registry().get("adapters") or {}):
        keywords = [arg for k in spec.keywords for arg in ("--keyword", k)]
        run("adapters", "install", str(LIBRARY / spec.name), "--domain", spec.domain, "--semester", spec.semester,
            "--description", spec.description, "--author", "locomlx team", *keywords)


def _distinct_other_benchmarks(spec: Specialist) -> int:
    own = (LIBRARY / spec.name / "eval" / "benchmark.jsonl").read_bytes()
    return len({p.read_bytes() for p in LIBRARY.glob("*/eval/benchmark.jsonl")} - {own})


def _complete(results: Path, others: int) -> bool:
    """A full evaluation: every benchmark example, and every other benchmark of the library out of domain."""
    if not results.is_file():
        return False
    data = json.loads(results.read_text())
    return (data["inference"].get("limit") is None and data["inference"].get("ood_limit") == OOD_LIMIT
            and len(data["ood"]) == others)


def evaluate(spec: Specialist, again: bool = False) -> dict:
    """`locomlx eval` unless a complete results.json exists (or `again`); records the scores in the registry."""
    results = LIBRARY / spec.name / "eval" / "results.json"
    if again or not _complete(results, _distinct_other_benchmarks(spec)):
        # Exit code 2 (FAIL) is a result too: it is recorded, and shapes the promotion below.
        code = subprocess.run([LOCOMLX, "eval", str(LIBRARY / spec.name), "--max-tokens", str(EVAL_MAX_TOKENS),
                               "--ood-limit", str(OOD_LIMIT)], cwd=ROOT).returncode
        if code not in (0, 2):
            sys.exit(f"evaluation of {spec.name} failed (exit {code})")
    run("registry", "refresh", spec.name)
    return json.loads(results.read_text())


def promote_best(results: dict[Specialist, dict]) -> None:
    """Per domain, the best adapter that passed becomes active. A domain where none passed gets its best
    adapter with a significant in-domain gain, forced and said so: the router keeps other domains'
    questions away from it, and `locomlx router eval` measures what a wrong route costs."""
    for domain in sorted({s.domain for s in results}):
        entries = {s.name: r for s, r in results.items() if s.domain == domain}
        passed = [n for n, r in entries.items() if r["passed"]]
        significant = [n for n, r in entries.items() if r["significant"]]
        best = lambda names: max(sorted(names), key=lambda n: entries[n]["adapter_score"])  # noqa: E731
        if passed:
            run("promote", best(passed))
        elif significant:
            name = best(significant)
            print(f"{name}: significant in-domain gain but out-of-domain degradation "
                  f"{entries[name]['ood_degradation']:.3f} > 0.05: promoted with --force")
            run("promote", name, "--force")
        else:
            print(f"{domain}: no adapter with a significant gain; the domain stays without a specialist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="Build only this adapter (repeatable).")
    parser.add_argument("--retrain", action="store_true", help="Train the adapters again even if they exist.")
    parser.add_argument("--reevaluate", action="store_true",
                        help="Evaluate the adapters again even if their results exist (regenerates every score).")
    args = parser.parse_args()
    chosen = [s for s in SWARM if not args.only or s.name in args.only]
    importlib.import_module("general_queries").write(LIBRARY / "router" / "general.jsonl")
    data = {spec: write_data(spec) for spec in SWARM}  # every domain's data first: training replays the others
    for spec in chosen:  # all adapters first: each evaluation checks the others' benchmarks (out of domain)
        build(spec, *data[spec], args.retrain)
        register(spec)
    promote_best({spec: evaluate(spec, args.reevaluate) for spec in chosen})
    run("router", "train")
    run("registry", "validate")


if __name__ == "__main__":
    main()
