#!/usr/bin/env python3
"""Evaluate an adapter (or the base model) on a benchmark: the contributing guide's entry point, identical to
`locomlx eval`.

    python scripts/evaluate.py --adapter adapters/sentiment --benchmark adapters/sentiment/eval/benchmark.jsonl \
        --output results.json
    python scripts/evaluate.py --benchmark data/benchmark.jsonl --output base.json     # base model only

With --adapter: adapter vs base, the out-of-domain check, exit code 2 on FAIL, and --output receives a copy
of results.json; without it, the base model's scores go to --output. Every flag of `locomlx eval --help`
works here.
"""

from locomlx.cli import run_as_script
from locomlx.cli.eval import eval_command

if __name__ == "__main__":
    run_as_script(eval_command, "evaluate.py")
