#!/usr/bin/env python3
"""Arithmetic (sums and differences) from reasoning-gym's chain_sum generator, for `math-chainsum`.

Source: the `chain_sum` procedural generator in the PyPI wheel reasoning-gym==0.1.25 (Apache-2.0),
run from the unpacked wheel without installing the package or its dependencies (only its pure-Python
arithmetic, dataset and coaching modules load). Settings: 2 to 3 terms of 1 or 2 digits, + and -,
seeded items 0..N. Never its `gsm_symbolic` templates: they are rewritten GSM8K test items.
Processing: the generator's wording ("State the final answer to the following arithmetic problem")
goes to the instruction, the expression ("12 + 7 - 30 =") is the input and the exact integer answer
the output; duplicate expressions dropped; split by expression.

    python scripts/data/chain_sum_math.py [OUT_DIR]     # default data/math-chainsum
"""

import sys
from pathlib import Path

from sources import reasoning_gym_module, split_by_group, write_split

INSTRUCTION = "State the final answer to the following arithmetic problem. Reply with the number only."
SOURCE = "reasoning-gym==0.1.25 chain_sum generator (Apache-2.0)"
GENERATED = 3000  # items drawn from the generator before deduplication
REVIEW = """20 random training examples read (seed 1) and recomputed: all 20 answers are right, including
negative results ("32 - 81 - 62 =" -> -111, "18 - 26 =" -> -8), zeros ("2 + 3 + 0 =" -> 5) and three-term
chains ("93 + 66 - 83 =" -> 76). Inputs are the bare expression; the instruction keeps the generator's
wording."""
LIMITATIONS = """Synthetic expressions, not word problems: the adapter learns to compute short sums and differences of
small integers and to answer with the number alone. Numbers of 1-2 digits and at most 3 terms only.
`locomlx data check` warns of a few near-duplicates: "12 + 7 =" and "12 - 7 =" differ only in the
operator, which its text normalisation drops; they are different problems and both are kept."""


def build(seed: int = 0, n_train: int = 800) -> tuple[list[dict], list[dict]]:
    chain_sum = reasoning_gym_module("arithmetic.chain_sum")
    config = chain_sum.ChainSumConfig(min_terms=2, max_terms=3, min_digits=1, max_digits=2, seed=seed,
                                      size=GENERATED)
    rows, seen = [], set()
    for item in chain_sum.ChainSumDataset(config):
        expression = item["metadata"]["expression"]
        if expression in seen:
            continue
        seen.add(expression)
        rows.append({"instruction": INSTRUCTION, "input": f"{expression} =", "output": item["answer"],
                     "metric": "exact_match", "source": SOURCE, "expression": expression})
    benchmark, train = split_by_group(rows, "expression", 300, n_train, seed)
    return train, benchmark


if __name__ == "__main__":
    train, benchmark = build()
    write_split(Path(sys.argv[1] if len(sys.argv) > 1 else "data/math-chainsum"), train, benchmark)
