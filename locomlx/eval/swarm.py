"""The headline experiment's core: the base model, the routed swarm, oracle routing and the swarm with an
enhancement, scored on the union of the active adapters' benchmarks, with routing accuracy, latency, memory
and the adapter switch time. `scripts/swarm_experiment.py` runs it and writes docs/swarm_results.md."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

from locomlx.engine.engine import Engine, peak_memory_mb
from locomlx.eval.routing import routing_report, task_scores
from locomlx.eval.run import InferenceConfig, load_benchmark, run_benchmark
from locomlx.prompt import example_messages
from locomlx.provenance import hardware
from locomlx.registry import active_adapters, load_registry
from locomlx.router.load import load_router
from locomlx.scoring.stats import bootstrap_ci, paired_p_value

SYSTEMS = ("base", "router", "oracle", "enhanced")


@dataclass
class SwarmSettings:
    limit: int | None = None
    max_tokens: int = 64
    latency_queries: int = 10
    reread: bool = True
    votes: int = 1
    vote_temperature: float = 0.7
    router: str | None = None  # --router's name; None: $LOCOMLX_ROUTER, else the default

    @property
    def enhancement(self) -> str:
        return ", ".join(filter(None, ["RE2" if self.reread else "", f"{self.votes} votes" if self.votes > 1 else ""]))


def latencies(engine: Engine, router, registry, library: Path, per_domain: int, max_tokens: int) -> list[float]:
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


def switch_seconds(engine: Engine, repeats: int = 2000) -> float:
    names = list(engine.adapters) + [None]
    timings = [engine.select(names[i % len(names)]) for i in range(repeats)]
    engine.select(None)
    return statistics.median(timings)


def run_swarm_experiment(library: Path, settings: SwarmSettings = SwarmSettings(), on_progress=print) -> dict:
    """Per system: the score on the union, its 95% interval, the paired p-value against the base model and the
    score per domain; and the facts printed under the table."""
    registry = load_registry(library)
    started = time.perf_counter()
    engine = Engine.load(registry.base_model.id if registry.base_model else None)
    router = load_router(settings.router, engine, registry, library)
    routing, decisions = routing_report(router, registry, library)
    inference = InferenceConfig(max_tokens=settings.max_tokens, limit=settings.limit)
    rows = task_scores(engine, registry, library, decisions, inference, on_progress=on_progress)
    enhanced_inference = replace(inference, reread=settings.reread, votes=settings.votes,
                                 vote_temperature=settings.vote_temperature)
    for row in rows:
        # The enhanced system: where the router chose this domain's adapter, its enhanced answer; elsewhere
        # the plain routed one.
        name = active_adapters(registry).get(row.domain)
        if name is None or not settings.enhancement:  # no specialist, or nothing to enhance: plain routed answers
            row.per_example["enhanced"] = row.per_example["router"]
            continue
        enhanced = run_benchmark(engine, row.benchmark, name, inference=enhanced_inference)
        row.per_example["enhanced"] = [e.score if own else r for e, own, r in
                                       zip(enhanced.examples, row.per_example["own"], row.per_example["router"])]
    timed = latencies(engine, router, registry, library, settings.latency_queries, settings.max_tokens)
    union = {k: [s for r in rows for s in r.per_example[k]] for k in SYSTEMS}
    systems = {}
    for key in SYSTEMS:
        ci = bootstrap_ci(union[key])
        systems[key] = {"score": sum(union[key]) / len(union[key]), "ci95": [ci.low, ci.high],
                        "p_value": None if key == "base" else paired_p_value(union[key], union["base"]),
                        "per_domain": {r.domain: sum(r.per_example[key]) / len(r.per_example[key]) for r in rows}}
    return {
        "systems": systems,
        "domains": [r.domain for r in rows],
        "examples": len(union["base"]),
        "router": router.name,
        "routing_accuracy": routing.accuracy,
        "routing_accuracy_ci95": [routing.accuracy_ci.low, routing.accuracy_ci.high],
        "routing_per_domain": routing.per_domain,
        "routing_confusion": routing.confusion,
        # What wrong routes cost: oracle minus routed on the union, and their paired test.
        "misrouting_cost": systems["oracle"]["score"] - systems["router"]["score"],
        "misrouting_p_value": paired_p_value(union["router"], union["oracle"]),
        "routing_queries": routing.n_queries,
        "routing_latency_ms_median": routing.latency_ms_median,
        "latency_seconds_mean": statistics.mean(timed),
        "latency_seconds_p95": sorted(timed)[int(0.95 * (len(timed) - 1))],
        "peak_memory_mb": peak_memory_mb(),
        "adapter_switch_us": switch_seconds(engine) * 1e6,
        "metrics": {r.domain: r.metric for r in rows},
        "max_tokens": settings.max_tokens,
        "limit": settings.limit,
        "hardware": hardware(),
        "seconds": time.perf_counter() - started,
    }
