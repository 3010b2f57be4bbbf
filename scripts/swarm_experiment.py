#!/usr/bin/env python3
"""The headline experiment: does the routed swarm beat the base model on real tasks, on a laptop CPU?

On the union of the shipped adapters' benchmarks it scores (a) the base model alone, (b) the routed
swarm (the router picks an adapter per query), (c) oracle routing (each query answered by its own
domain's adapter) and (d) the routed swarm with an inference enhancement (RE2 by default: applied where
the router chose the benchmark's own specialist; other queries keep their plain routed answer); and it measures routing
accuracy, end-to-end latency per query (route + answer, one query at a time), peak memory and the
adapter switch time. Writes docs/swarm_results.md (the README's opening table) and .json.

    python scripts/swarm_experiment.py --limit 100 --latency-queries 5   # the README's numbers
    python scripts/swarm_experiment.py                 # every benchmark example (RE2 alone takes ~25 minutes)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.engine.engine import Engine, peak_memory_mb
from locomlx.eval.routing import routing_report, task_scores
from locomlx.eval.run import InferenceConfig, load_benchmark, run_benchmark
from locomlx.prompt import example_messages
from locomlx.provenance import hardware
from locomlx.registry import active_adapters, load_registry
from locomlx.router.load import load_router
from locomlx.scoring.stats import bootstrap_ci, paired_p_value

ROOT = Path(__file__).resolve().parents[1]


def _latency(engine: Engine, router, registry, library: Path, per_domain: int, max_tokens: int) -> list[float]:
    """Seconds from question to finished answer (routing included), one query at a time."""
    seconds = []
    for entry in (e for e in registry.adapters.values() if e.active):
        for ex in load_benchmark(library / entry.path / "eval" / "benchmark.jsonl")[-per_domain:]:
            messages = example_messages(ex.instruction, ex.input)
            start = time.perf_counter()
            decision = router.route(messages[0]["content"])
            engine.generate(messages, adapter=decision.adapter, max_tokens=max_tokens)
            seconds.append(time.perf_counter() - start)
    return seconds


def _switch_seconds(engine: Engine, repeats: int = 2000) -> float:
    names = list(engine.adapters) + [None]
    timings = [engine.select(names[i % len(names)]) for i in range(repeats)]
    engine.select(None)
    return statistics.median(timings)


def main() -> None:
    locomlx.keep_freed_memory()  # this script owns its process, as `locomlx` does (locomlx/heap.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="First N examples per benchmark.")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--latency-queries", type=int, default=10, help="Queries per domain timed end to end.")
    parser.add_argument("--out", default=str(ROOT / "docs" / "swarm_results"), help="Output path without suffix.")
    parser.add_argument("--reread", action=argparse.BooleanOptionalAction, default=True,
                        help="(d) uses RE2 re-reading [on].")
    parser.add_argument("--votes", type=int, default=1, help="(d) uses N self-consistency votes [1 = off].")
    parser.add_argument("--vote-temperature", type=float, default=0.7)
    args = parser.parse_args()

    library = library_dir()
    registry = load_registry(library)
    started = time.perf_counter()
    engine = Engine.load(registry.base_model.id if registry.base_model else None)
    router = load_router(None, engine, registry, library)
    routing, decisions = routing_report(router, registry, library)
    inference = InferenceConfig(max_tokens=args.max_tokens, limit=args.limit)
    rows = task_scores(engine, registry, library, decisions, inference,
                       on_progress=lambda m: print(m, flush=True))
    enhanced_inference = replace(inference, reread=args.reread, votes=args.votes,
                                 vote_temperature=args.vote_temperature)
    enhancement = ", ".join(filter(None, ["RE2" if args.reread else "",
                                          f"{args.votes} votes" if args.votes > 1 else ""]))
    for row in rows:
        # (d): where the router chose this domain's adapter, its enhanced answer; elsewhere the plain routed one.
        name = active_adapters(registry).get(row.domain)
        if name is None:  # no specialist in this domain: the base model's plain answers stand
            row.per_example["enhanced"] = row.per_example["router"]
            continue
        enhanced = run_benchmark(engine, row.benchmark, name, inference=enhanced_inference)
        row.per_example["enhanced"] = [e.score if own else r for e, own, r in
                                       zip(enhanced.examples, row.per_example["own"], row.per_example["router"])]
    latencies = _latency(engine, router, registry, library, args.latency_queries, args.max_tokens)

    keys = ("base", "router", "oracle", "enhanced")
    union = {k: [s for r in rows for s in r.per_example[k]] for k in keys}
    per_domain = {k: {r.domain: sum(r.per_example[k]) / len(r.per_example[k]) for r in rows} for k in keys}
    systems = [("(a) base model", "base"), ("(b) routed swarm", "router"), ("(c) oracle routing", "oracle"),
               (f"(d) routed swarm + {enhancement}", "enhanced")]
    table = ["| system | score (all benchmarks) | 95% CI | vs base: p | " + " | ".join(r.domain for r in rows) + " |",
             "|---|---:|---|---:|" + "---:|" * len(rows)]
    summary = {}
    for label, key in systems:
        ci = bootstrap_ci(union[key])
        p = "" if key == "base" else f"{paired_p_value(union[key], union['base']):.2g}"
        mean = sum(union[key]) / len(union[key])
        summary[key] = {"system": label, "score": mean, "ci95": [ci.low, ci.high], "per_domain": per_domain[key]}
        table.append(f"| {label} | {mean:.3f} | [{ci.low:.3f}, {ci.high:.3f}] | {p} | "
                     + " | ".join(f"{per_domain[key][r.domain]:.3f}" for r in rows) + " |")
    facts = {
        "examples": len(union["base"]),
        "routing_accuracy": routing.accuracy,
        "routing_queries": routing.n_queries,
        "routing_latency_ms_median": routing.latency_ms_median,
        "latency_seconds_mean": statistics.mean(latencies),
        "latency_seconds_p95": sorted(latencies)[int(0.95 * (len(latencies) - 1))],
        "peak_memory_mb": peak_memory_mb(),
        "adapter_switch_us": _switch_seconds(engine) * 1e6,
        "metrics": {r.domain: r.metric for r in rows},
        "max_tokens": args.max_tokens,
        "limit": args.limit,
        "hardware": hardware(),
        "seconds": time.perf_counter() - started,
    }
    lines = [
        f"Union of {facts['examples']} benchmark examples "
        f"({', '.join(f'{d}: {m}' for d, m in facts['metrics'].items())}), "
        f"greedy, at most {args.max_tokens} tokens per answer, "
        "SmolLM2-135M-Instruct (4-bit GGUF, computed in float32).",
        "", *table, "",
        f"Routing accuracy {routing.accuracy:.3f} on {routing.n_queries} held-out queries ({router.name} router, "
        f"median {routing.latency_ms_median:.1f} ms per query) · "
        f"end-to-end latency per query {facts['latency_seconds_mean']:.2f} s "
        f"mean, {facts['latency_seconds_p95']:.2f} s p95 · peak memory {facts['peak_memory_mb']:.0f} MB · "
        f"adapter switch {facts['adapter_switch_us']:.2f} µs · {facts['hardware']}",
    ]
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"systems": summary, **facts}, indent=2) + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
