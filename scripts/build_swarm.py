#!/usr/bin/env python3
"""Build the shipped swarm from scratch: data -> training -> registry -> evaluation -> promotion -> router.

Every step is a `locomlx` command (printed before it runs) and is skipped when its output already
exists, so an interrupted build continues where it stopped; --retrain starts the adapters over.

    python scripts/build_swarm.py               # everything (about 45 minutes on a 2-core CPU)
    python scripts/build_swarm.py --only sentiment-rt --retrain

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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "data"))
LIBRARY = ROOT / "adapters"
LOCOMLX = str(Path(sys.executable).parent / "locomlx")
EVAL_MAX_TOKENS = 64  # room for the base model's chatty answers; the adapters answer in a few tokens
SEMESTER = "2026-fall"


@dataclass(frozen=True)
class Specialist:
    name: str
    domain: str
    builder: str  # module in scripts/data with build(seed) -> (train, benchmark)
    description: str
    keywords: tuple[str, ...]


SWARM = (
    Specialist("sentiment-rt", "sentiment", "sentiment_rt", "Movie-review sentiment: positive or negative",
               ("review", "movie", "film", "sentiment", "positive or negative: 2")),
    Specialist("spam-assassin", "spam", "spam_assassin", "E-mail spam detection: spam or legitimate",
               ("spam: 2", "e-mail", "email", "subject", "unsubscribe", "click here")),
    Specialist("reading-boolq", "reading", "boolq", "Yes/no questions about a given passage",
               ("passage: 2", "yes or no", "read the passage")),
    Specialist("math-asdiv", "math", "asdiv_math", "Arithmetic word problems; replies with the number",
               ("how many", "how much", "math", "word problem", "solve")),
)


def run(*args: str) -> None:
    print("$ locomlx " + " ".join(args), flush=True)
    subprocess.run([LOCOMLX, *args], check=True, cwd=ROOT)


def registry() -> dict:
    import yaml
    return yaml.safe_load((LIBRARY / "registry.yaml").read_text()) or {}


def build(spec: Specialist, retrain: bool) -> None:
    data = ROOT / "data" / spec.name
    train, benchmark = importlib.import_module(spec.builder).build()
    importlib.import_module("sources").write_split(data, train, benchmark)
    adapter = LIBRARY / spec.name
    if retrain and adapter.exists():
        if spec.name in (registry().get("adapters") or {}):
            run("adapters", "remove", spec.name, "--keep-files")
        shutil.rmtree(adapter)
    if not (adapter / "adapter_config.json").is_file():
        resume = ["--resume"] if Path(f"{adapter}.partial").is_dir() else []
        run("train", "--config", "configs/swarm.yaml", "--dataset", str(data / "train.jsonl"),
            "--benchmark", str(data / "benchmark.jsonl"), "--output", str(adapter), *resume)


def register(spec: Specialist) -> None:
    if spec.name not in (registry().get("adapters") or {}):
        keywords = [arg for k in spec.keywords for arg in ("--keyword", k)]
        run("adapters", "install", str(LIBRARY / spec.name), "--domain", spec.domain, "--semester", SEMESTER,
            "--description", spec.description, "--author", "locomlx team", *keywords)


def _complete(results: Path, others: int) -> bool:
    """A full evaluation: every benchmark example, and every other adapter's benchmark out of domain."""
    if not results.is_file():
        return False
    data = json.loads(results.read_text())
    return data["inference"].get("limit") is None and len(data["ood"]) == others


def evaluate(spec: Specialist) -> None:
    results = LIBRARY / spec.name / "eval" / "results.json"
    if not _complete(results, len(SWARM) - 1):
        # Exit code 2 (FAIL) is a result too; it is recorded, and promote refuses it below.
        code = subprocess.run([LOCOMLX, "eval", str(LIBRARY / spec.name), "--max-tokens", str(EVAL_MAX_TOKENS)],
                              cwd=ROOT).returncode
        if code not in (0, 2):
            sys.exit(f"evaluation of {spec.name} failed (exit {code})")
    run("registry", "refresh", spec.name)
    if json.loads(results.read_text())["passed"]:
        run("promote", spec.name)
    else:
        print(f"{spec.name} did not pass the acceptance bar; not promoted (see {results})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="Build only this adapter (repeatable).")
    parser.add_argument("--retrain", action="store_true", help="Train the adapters again even if they exist.")
    args = parser.parse_args()
    chosen = [s for s in SWARM if not args.only or s.name in args.only]
    importlib.import_module("general_queries").write(LIBRARY / "router" / "general.jsonl")
    for spec in chosen:  # all adapters first: each evaluation checks the others' benchmarks (out of domain)
        build(spec, args.retrain)
        register(spec)
    for spec in chosen:
        evaluate(spec)
    run("router", "train")
    run("registry", "validate")


if __name__ == "__main__":
    main()
