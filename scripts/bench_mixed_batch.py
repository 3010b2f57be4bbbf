#!/usr/bin/env python3
"""Mixed-adapter batch throughput: a batch whose rows use 4+ different adapters against the same batch
with one adapter, in the same run, on the embedded model.

Random rank-8 adapters over every linear layer (as `locomlx bench` uses); the same prompts; every
answer runs to --max-tokens (end-of-sequence is switched off) so both batches do exactly the same work.
Each figure is the median of --repeats, the two kinds alternating. Target: mixed >= 75% of single.

    python scripts/bench_mixed_batch.py
    python scripts/bench_mixed_batch.py --adapters 8 --rows 32 --max-tokens 32 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import locomlx  # first: preloads the CBLAS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import prompts  # noqa: E402  (the same varied prompts as the evaluation benchmark)


def run(args) -> dict:
    from locomlx.bench import _random_adapter
    from locomlx.engine.engine import Engine
    from locomlx.prompt import example_messages

    engine = Engine.load(args.base_model)
    engine.tokenizer.eos_token_ids = set()  # every row generates --max-tokens tokens
    with tempfile.TemporaryDirectory() as tmp:
        paths = [_random_adapter(Path(tmp) / f"a{i}", engine, args.rank, seed=i) for i in range(args.adapters)]
        names = [engine.load_adapter(path).name for path in paths]
    conversations = [example_messages(p) for p in prompts(args.rows)]
    kinds = {"single": {"adapter": names[0]},
             "mixed": {"adapters": [names[i % len(names)] for i in range(args.rows)]}}
    engine.generate_batch(conversations[:2], adapters=names[:2], max_tokens=2)  # warm-up
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    tokens = {}
    for _ in range(args.repeats):
        for kind, choice in kinds.items():
            batch = engine.generate_batch(conversations, max_tokens=args.max_tokens, batch_size=args.rows, **choice)
            seconds[kind].append(batch.seconds)
            tokens[kind] = batch.generation_tokens
    tps = {kind: tokens[kind] / statistics.median(seconds[kind]) for kind in kinds}
    return {"settings": vars(args), "tokens_per_second": tps, "mixed_over_single": tps["mixed"] / tps["single"],
            "seconds": seconds}


def main() -> None:
    locomlx.keep_freed_memory()  # this script owns its process, as `locomlx` does (locomlx/heap.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--adapters", type=int, default=4, help="distinct adapters in the mixed batch")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rows", type=int, default=16, help="conversations in the batch")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    tps = results["tokens_per_second"]
    print(f"{args.rows} answers of {args.max_tokens} tokens in one batch, rank-{args.rank} adapters on every linear "
          f"layer, medians of {args.repeats}")
    print(f"  one adapter for every row     {tps['single']:7.1f} tokens/s")
    print(f"  {args.adapters} adapters mixed in the batch {tps['mixed']:7.1f} tokens/s   "
          f"mixed / single = {results['mixed_over_single']:.0%} (target >= 75%)")


if __name__ == "__main__":
    main()
