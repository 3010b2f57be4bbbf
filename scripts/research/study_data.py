"""Data the studies draw beyond what an adapter folder keeps: more rows of a domain's training pool, from the
data builder (scripts/data/) that made the library's adapter's data.

A builder asked for more training rows returns the same benchmark and the same first rows (its split
shuffles once and cuts), so rows past an adapter's own are data it never saw, and none overlaps the
benchmark: the benchmark is checked to be the library's before any row is used.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from locomlx.data.records import read_examples

ROOT = Path(__file__).resolve().parents[2]
BUILDERS = {"math": "chain_sum_math", "sentiment": "sentiment_rt", "spam": "spam_assassin",
            "summary": "xsum_summary"}  # the scripts/data/ module that makes each shipped domain's data


def built_pool(domain: str, benchmark: Path, size: int) -> list[dict]:
    """`size` training rows from the domain's builder, whose benchmark must be the library's."""
    sys.path.insert(0, str(ROOT / "scripts" / "data"))
    builder = importlib.import_module(BUILDERS[domain])
    train_rows, benchmark_rows = builder.build(n_train=size)
    shipped = [e.input for e in read_examples(benchmark)[0]]
    if [r["input"] for r in benchmark_rows] != shipped:
        sys.exit(f"error: scripts/data/{BUILDERS[domain]}.py makes another benchmark than {benchmark}; its pool "
                 "could overlap the library's benchmark, so the study stops.")
    return train_rows


def stored_rows(folder: Path) -> list[dict]:
    """The adapter's own training set as rows (smoke runs, and domains without a builder)."""
    examples, _ = read_examples(folder / "training" / "dataset.jsonl")
    return [{"instruction": e.instruction, "input": e.input, "output": e.output, **e.extra} for e in examples]
