#!/usr/bin/env python3
"""Evaluate an adapter (or the base model) on a benchmark: the contributing guide's entry point.

    python scripts/evaluate.py --adapter adapters/sentiment --benchmark adapters/sentiment/eval/benchmark.jsonl \
        --output results.json
    python scripts/evaluate.py --benchmark data/benchmark.jsonl --output base.json     # base model only

With --adapter this is `locomlx eval` (adapter vs base, out-of-domain check, exit code 2 on FAIL) and
--output receives a copy of results.json; without it, the base model's scores go to --output.
"""

import argparse
import shutil
import sys
from pathlib import Path

import locomlx  # noqa: F401  (first: preloads the fast CBLAS)
from locomlx.adapters.library import library_dir
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.evaluate import evaluate_adapter, format_report
from locomlx.atomic import write_json_atomic
from locomlx.eval.run import InferenceConfig, run_benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", help="adapter directory; omitted = the base model alone")
    parser.add_argument("--benchmark", help="benchmark JSONL (default: ADAPTER/eval/benchmark.jsonl)")
    parser.add_argument("--output", help="where to write the results JSON")
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--metric", choices=["exact_match", "choice", "rouge_l", "pass@1", "judge"])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--adapters-dir", default=None)
    parser.add_argument("--no-ood", action="store_true")
    args = parser.parse_args()
    inference = InferenceConfig(max_tokens=args.max_tokens, limit=args.limit)
    try:
        if args.adapter:
            evaluation = evaluate_adapter(args.adapter, library_dir(args.adapters_dir), args.base_model, args.benchmark,
                                          args.metric, inference, ood=not args.no_ood)
            print(format_report(evaluation))
            if args.output:
                shutil.copyfile(Path(args.adapter) / "eval" / "results.json", args.output)
            return 0 if evaluation.results["passed"] else 2
        if not args.benchmark:
            parser.error("--benchmark is required without --adapter")
        run = run_benchmark(Engine.load(args.base_model), args.benchmark, None, args.metric, inference)
        print(f"base: {run.metric} {run.score:.3f} 95% CI [{run.ci.low:.3f}, {run.ci.high:.3f}] ({run.n_examples} examples)")
        if args.output:
            write_json_atomic(Path(args.output), run.to_dict())
        return 0
    except LocomlxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
