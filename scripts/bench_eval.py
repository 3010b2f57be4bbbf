#!/usr/bin/env python3
"""Evaluation throughput: batched generation against one prompt at a time, and against transformers.

The same greedy answers to the same prompts (HumanEval-style instructions of varied length),
on the embedded model: locomlx batched (how `locomlx eval` runs), the same batches with the shared
prompt prefix prefilled for every row (engine/prefix.py switched off), locomlx one prompt at a time,
and transformers' batched `generate` on the same float32 weights (if torch is installed).
Throughput is generated tokens per second of wall time; each engine runs in its own process, once per round,
the rounds in alternating order, and medians over the rounds are reported (one run drifts by 15% on a shared
machine).

    python scripts/bench_eval.py
    python scripts/bench_eval.py --prompts 32 --max-tokens 64 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time

SUBJECTS = ["a list of integers", "a string", "two numbers", "a dictionary of word counts", "a sorted list",
            "a nested list", "a sentence", "a matrix given as a list of rows"]
TASKS = ["returns the largest element", "counts the vowels", "reverses the order", "checks whether it is a palindrome",
         "sums the even values", "removes duplicates while keeping order", "finds the median", "capitalises each word"]


def prompts(n: int) -> list[str]:
    return [f"Write a Python function that takes {SUBJECTS[i % len(SUBJECTS)]} and {TASKS[(i * 3) % len(TASKS)]}."
            for i in range(n)]


def run_locomlx(settings: dict) -> dict:
    from locomlx.engine import prefix
    from locomlx.engine.engine import Engine
    from locomlx.prompt import example_messages

    engine = Engine.load()
    conversations = [example_messages(p) for p in prompts(settings["prompts"])]
    engine.generate_batch(conversations, max_tokens=4, batch_size=settings["batch_size"])  # warm-up at full size
    batched = engine.generate_batch(conversations, max_tokens=settings["max_tokens"], batch_size=settings["batch_size"])
    shared_prefix_threshold = prefix.MIN_SHARED_TOKENS
    prefix.MIN_SHARED_TOKENS = sys.maxsize  # the same batches with every row prefilled in full
    unshared = engine.generate_batch(conversations, max_tokens=settings["max_tokens"],
                                     batch_size=settings["batch_size"])
    prefix.MIN_SHARED_TOKENS = shared_prefix_threshold
    start = time.perf_counter()
    singles = [engine.generate(c, max_tokens=settings["max_tokens"]) for c in conversations]
    single_seconds = time.perf_counter() - start
    return {
        "batched": {"tokens": batched.generation_tokens, "seconds": batched.seconds},
        "batched_unshared_prefix": {"tokens": unshared.generation_tokens, "seconds": unshared.seconds},
        "one_at_a_time": {"tokens": sum(g.generation_tokens for g in singles), "seconds": single_seconds},
        "same_answers": batched.texts == [g.text for g in singles] == unshared.texts,
    }


def run_transformers(settings: dict) -> dict:
    from locomlx.bench import transformers_twin
    from locomlx.models.load import load_tokenizer_only
    from locomlx.prompt import example_messages, render_prompt

    import torch

    model, config, _ = transformers_twin(None)
    model.eval()
    tokenizer = load_tokenizer_only(None)
    encoded = [render_prompt(tokenizer, example_messages(p)) for p in prompts(settings["prompts"])]
    eos = config["eos_token_id"]
    tokens, seconds = 0, 0.0
    size = settings["batch_size"]
    for i in range(0, len(encoded), size):
        chunk = encoded[i:i + size]
        width = max(len(t) for t in chunk)
        ids = torch.tensor([[eos] * (width - len(t)) + t for t in chunk])  # left padding
        mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in chunk])
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings["max_tokens"],
                                 do_sample=False, eos_token_id=eos, pad_token_id=eos)
        seconds += time.perf_counter() - start
        for row in out[:, width:].tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
    return {"batched": {"tokens": tokens, "seconds": seconds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="Runs of each engine, in alternating order; medians are reported [3].")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=["locomlx", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {"prompts": args.prompts, "max_tokens": args.max_tokens, "batch_size": args.batch_size}
    if args.worker:
        import locomlx  # CBLAS preload unless LOCOMLX_BLAS=none

        locomlx.keep_freed_memory()  # a worker owns its process, as `locomlx` does (locomlx/heap.py)
        print(json.dumps((run_locomlx if args.worker == "locomlx" else run_transformers)(settings)))
        return
    from locomlx.bench import alternating_rounds, run_isolated

    workers = ["locomlx"] + (["transformers"] if importlib.util.find_spec("torch") else [])
    runs: dict[str, list[dict]] = {name: [] for name in workers}
    for round_, name in alternating_rounds(workers, args.rounds):
        print(f"round {round_}/{args.rounds}: generating with {name} ...", file=sys.stderr)
        runs[name].append(run_isolated([sys.executable, __file__, "--worker", name, "--prompts",
                                        str(args.prompts), "--max-tokens", str(args.max_tokens),
                                        "--batch-size", str(args.batch_size)],
                                       without_blas=name == "transformers"))
    if args.json:
        print(json.dumps({"settings": settings, "results": runs}, indent=2))
        return

    def tps(name: str, kind: str) -> tuple[float, str]:
        """The median tokens/s of `kind` over the rounds, and their range."""
        speeds = [r[kind]["tokens"] / r[kind]["seconds"] for r in runs[name]]
        return statistics.median(speeds), f"({min(speeds):.0f}-{max(speeds):.0f})" if len(speeds) > 1 else ""

    (ours, ours_range), (single, _) = tps("locomlx", "batched"), tps("locomlx", "one_at_a_time")
    unshared, _ = tps("locomlx", "batched_unshared_prefix")
    same = all(r["same_answers"] for r in runs["locomlx"])
    print(f"Greedy answers to {args.prompts} prompts, up to {args.max_tokens} tokens each, "
          f"batches of {args.batch_size}, SmolLM2-135M; medians of {args.rounds} rounds (each in its own process)")
    print(f"  locomlx batched        {ours:7.1f} tokens/s {ours_range}")
    print(f"  ... prefix not shared  {unshared:7.1f} tokens/s   shared / not shared = {ours / unshared:.2f}x")
    print(f"  locomlx one at a time  {single:7.1f} tokens/s   batched / one at a time = {ours / single:.2f}x "
          f"(same answers: {same})")
    if "transformers" in runs:
        theirs, theirs_range = tps("transformers", "batched")
        print(f"  transformers batched   {theirs:7.1f} tokens/s {theirs_range}   "
              f"locomlx / transformers = {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
