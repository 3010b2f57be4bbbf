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
from pathlib import Path

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.eval.swarm import SwarmSettings, run_swarm_experiment

ROOT = Path(__file__).resolve().parents[1]


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
    settings = SwarmSettings(args.limit, args.max_tokens, args.latency_queries, args.reread, args.votes,
                             args.vote_temperature)
    facts = run_swarm_experiment(library_dir(), settings, on_progress=lambda m: print(m, flush=True))
    systems = facts.pop("systems")
    domains = facts.pop("domains")
    router = facts.pop("router")
    labels = {"base": "(a) base model", "router": "(b) routed swarm", "oracle": "(c) oracle routing",
              "enhanced": f"(d) routed swarm + {settings.enhancement}"}
    table = ["| system | score (all benchmarks) | 95% CI | vs base: p | " + " | ".join(domains) + " |",
             "|---|---:|---|---:|" + "---:|" * len(domains)]
    summary = {}
    for key, label in labels.items():
        system = systems[key]
        p = "" if system["p_value"] is None else f"{system['p_value']:.2g}"
        low, high = system["ci95"]
        summary[key] = {"system": label, "score": system["score"], "ci95": system["ci95"],
                        "per_domain": system["per_domain"]}
        table.append(f"| {label} | {system['score']:.3f} | [{low:.3f}, {high:.3f}] | {p} | "
                     + " | ".join(f"{system['per_domain'][d]:.3f}" for d in domains) + " |")
    lines = [
        f"Union of {facts['examples']} benchmark examples "
        f"({', '.join(f'{d}: {m}' for d, m in facts['metrics'].items())}), "
        f"greedy, at most {args.max_tokens} tokens per answer, "
        "SmolLM2-135M-Instruct (4-bit GGUF, computed in float32).",
        "", *table, "",
        f"Routing accuracy {facts['routing_accuracy']:.3f} on {facts['routing_queries']} held-out queries ({router} "
        f"router, median {facts['routing_latency_ms_median']:.1f} ms per query) · "
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
