#!/usr/bin/env python3
"""Accuracy gain and latency cost of each inference enhancement against plain greedy decoding.

For each adapter, on its own benchmark (ADAPTER/eval/benchmark.jsonl): the base model and the
adapter greedy, then the adapter with RE2 (--reread), with self-consistency votes, in its domain's
ensemble (when the registry has two or more adapters in the domain) and in each --compose that
names it. Prints a Markdown table (scores with 95% bootstrap intervals, paired p-values against
greedy, generation time per question); this is the table in the README.

    python scripts/compare_enhancements.py                          # every adapter in the registry
    python scripts/compare_enhancements.py sentiment-rt math-chainsum --limit 50 --votes 5
    python scripts/compare_enhancements.py --compose sentiment-rt+spam-assassin --json > compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.engine.batching import DEFAULT_BATCH
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.compare import CompareSettings, compare_enhancements, format_table
from locomlx.registry import load_registry


def main() -> int:
    locomlx.keep_freed_memory()  # this script owns its process, as `locomlx` does (locomlx/heap.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapters", nargs="*", help="library names [every installed adapter in the registry]")
    parser.add_argument("--adapters-dir", default=None, help="adapter library [./adapters; env LOCOMLX_ADAPTERS]")
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--limit", type=int, default=100, help="questions per benchmark [100]; 0 = all")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--votes", type=int, default=5)
    parser.add_argument("--vote-temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compose", action="append", default=[], metavar="A+B",
                        help="also answer with this composition on each of its adapters' benchmarks (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    args = parser.parse_args()
    library = library_dir(args.adapters_dir)
    try:
        adapters = args.adapters or sorted(name for name, e in load_registry(library).adapters.items() if e.installed)
        if not adapters:
            raise LocomlxError(f"No adapters given and none installed in {library}/registry.yaml.")
        settings = CompareSettings(args.limit or None, args.max_tokens, args.batch_size, args.votes,
                                   args.vote_temperature, args.seed)

        def progress(label, done, total):
            print(f"\r  {label}: {done}/{total}".ljust(70), end="\n" if done == total else "", file=sys.stderr)

        rows = compare_enhancements(Engine.load(args.base_model), library, adapters, settings, args.compose, progress)
    except LocomlxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
