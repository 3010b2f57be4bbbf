#!/usr/bin/env python3
"""Self-consistency's cost: each distinct prompt prefilled once for all its samples, against every sample
prefilling it (only the batch's common prefix shared), in the same run.

Real questions from shipped adapters' benchmarks (spam: long e-mails and one-word answers; summary: news
articles and one-sentence answers), answered by each adapter with --votes samples per question through
`sample_candidates`, as `locomlx eval --votes` and the RE2/votes study do. The two prefill paths alternate,
--rounds times; seconds per question are medians over the rounds. The two paths order the batch's rows
differently, so one seed gives a row other random draws; the share of equal sampled answers is reported.

    python scripts/bench_votes.py
    python scripts/bench_votes.py --adapters spam-assassin --questions 16 --votes 9 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import locomlx  # first: preloads the CBLAS

ROOT = Path(__file__).resolve().parents[1]


def measure(args) -> dict:
    from locomlx.boost.sampling import VoteSettings, sample_candidates
    from locomlx.engine import engine as engine_module
    from locomlx.engine import prefix
    from locomlx.engine.engine import Engine
    from locomlx.eval.run import load_benchmark
    from locomlx.prompt import example_messages

    engine = Engine.load()
    paths = {"each prompt once": prefix.prefill_prompts, "every sample prefills": prefix.prefill_shared_prefix}
    results = {}
    for adapter in args.adapters:
        folder = ROOT / "adapters" / adapter
        engine.load_adapter(folder, adapter)
        max_tokens = json.loads((folder / "eval" / "results.json").read_text())["inference"]["max_tokens"]
        questions = load_benchmark(folder / "eval" / "benchmark.jsonl")[: args.questions]
        conversations = [example_messages(q.instruction, q.input) for q in questions]
        settings = VoteSettings(args.votes, 0.7, seed=0)
        sample_candidates(engine, conversations[:1], [adapter], VoteSettings(2, 0.7), 2, 2)  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        texts: dict[str, list[str]] = {}
        for round_ in range(args.rounds):
            for name in paths if round_ % 2 == 0 else list(paths)[::-1]:
                engine_module.prefill_prompts = paths[name]
                candidates, batch = sample_candidates(engine, conversations, [adapter], settings, max_tokens,
                                                      args.batch_size)
                seconds[name].append(batch.seconds / len(questions))
                texts[name] = [c.text for group in candidates for c in group]
        engine_module.prefill_prompts = prefix.prefill_prompts
        engine.unload_adapter(adapter)
        medians = {name: statistics.median(s) for name, s in seconds.items()}
        same = sum(a == b for a, b in zip(*texts.values())) / len(texts["each prompt once"])
        results[adapter] = {"seconds_per_question": medians, "rounds": seconds,
                            "speedup": medians["every sample prefills"] / medians["each prompt once"],
                            "same_samples": same,
                            "max_tokens": max_tokens}
    return {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "results": results}


def main() -> None:
    locomlx.keep_freed_memory()  # this script owns its process, as `locomlx` does (locomlx/heap.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", nargs="+", default=["spam-assassin", "summary-xsum"],
                        help="Shipped adapters whose benchmarks' questions are asked [spam-assassin summary-xsum].")
    parser.add_argument("--questions", type=int, default=8, help="Questions per adapter [8].")
    parser.add_argument("--votes", type=int, default=15, help="Samples per question [15].")
    parser.add_argument("--batch-size", type=int, default=48, help="Rows decoded together [48, as eval].")
    parser.add_argument("--rounds", type=int, default=2, help="Runs of each path, alternating [2].")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    facts = measure(args)
    if args.json:
        print(json.dumps(facts, indent=2))
        return
    print(f"{args.votes} samples (T=0.7) for each of {args.questions} benchmark questions, batches of "
          f"{args.batch_size} rows, SmolLM2-135M; medians of {args.rounds} rounds, the two paths alternating")
    for adapter, r in facts["results"].items():
        once, every = r["seconds_per_question"].values()
        print(f"  {adapter:14s} each prompt prefilled once {once * 1000:7.0f} ms/question   every sample prefills "
              f"{every * 1000:7.0f} ms/question   = {r['speedup']:.2f}x faster   "
              f"(same samples: {r['same_samples']:.0%})")


if __name__ == "__main__":
    main()
