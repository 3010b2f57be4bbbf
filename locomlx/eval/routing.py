"""`locomlx router eval`: how well a router routes, and what misrouting costs in task score.

Routing quality is measured on held-out queries (the adapters' benchmarks + held-out general
questions): accuracy with a 95% interval, per-domain precision/recall, the confusion matrix,
the abstention rate (sent to the base model) and per-query latency. The cost of misrouting is
the benchmarks' task score when the router picks the adapter, against oracle routing (each
benchmark answered by its own domain's adapter) and against the base model alone.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from locomlx.engine.engine import Engine
from locomlx.eval.run import InferenceConfig, load_benchmark, run_benchmark
from locomlx.prompt import example_messages
from locomlx.registry import Registry, active_adapters
from locomlx.router.data import Query, routing_queries, shifted_queries
from locomlx.router.decision import GENERAL, RouteDecision, Router
from locomlx.scoring.metrics import score_answer
from locomlx.scoring.stats import Interval, bootstrap_ci


@dataclass
class TaskRow:
    domain: str
    benchmark: str
    metric: str
    n_examples: int
    base: float
    router: float
    oracle: float
    routed_to_own_adapter: float  # share of this benchmark's queries the router sent to its domain's adapter
    # base/router/oracle -> per-example scores; own -> 1.0 where the router chose this domain's adapter
    per_example: dict[str, list[float]] = field(default_factory=dict, repr=False)


@dataclass
class RoutingReport:
    router: str
    classes: list[str]
    n_queries: int
    accuracy: float
    accuracy_ci: Interval
    per_domain: dict[str, dict]  # domain -> precision, recall, support
    confusion: dict[str, dict[str, int]]  # true domain -> routed domain -> count
    abstention_rate: float  # share routed to the base model
    latency_ms_median: float
    latency_ms_p95: float
    unroutable: list[str]  # registered domains this router never picks (e.g. added after training)
    task: list[TaskRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def route_all(router: Router, texts: list[str],
              on_progress: Callable[[int, int], None] | None = None) -> list[RouteDecision]:
    decisions = []
    for i, text in enumerate(texts, start=1):
        decisions.append(router.route(text))
        if on_progress and (i % 50 == 0 or i == len(texts)):
            on_progress(i, len(texts))
    return decisions


def routing_report(
    router: Router, registry: Registry, library: Path, on_progress: Callable[[int, int], None] | None = None,
    queries: list[Query] | None = None,
) -> tuple[RoutingReport, dict[str, RouteDecision]]:
    """Routing metrics on `queries` (default: the held-out queries); also returns each query text's decision
    (for task scoring)."""
    queries = routing_queries(registry, library, "heldout") if queries is None else queries
    decisions = route_all(router, [q.text for q in queries], on_progress)
    truth, picked = [q.domain for q in queries], [d.domain for d in decisions]
    domains = sorted(set(truth) | set(picked) | set(router.classes))
    confusion = {t: {p: 0 for p in domains} for t in domains}
    for t, p in zip(truth, picked):
        confusion[t][p] += 1
    per_domain = {}
    for d in domains:
        hits = confusion[d][d]
        routed = sum(confusion[t][d] for t in domains)
        support = sum(confusion[d].values())
        per_domain[d] = {"precision": hits / routed if routed else 0.0, "recall": hits / support if support else 0.0,
                         "support": support}
    correct = [float(t == p) for t, p in zip(truth, picked)]
    latencies = sorted(d.seconds * 1000 for d in decisions)
    registered = set(active_adapters(registry))
    report = RoutingReport(
        router=router.name, classes=list(router.classes), n_queries=len(queries), accuracy=sum(correct) / len(correct),
        accuracy_ci=bootstrap_ci(correct), per_domain=per_domain, confusion=confusion,
        abstention_rate=sum(p == GENERAL for p in picked) / len(picked),
        latency_ms_median=statistics.median(latencies), latency_ms_p95=latencies[int(0.95 * (len(latencies) - 1))],
        unroutable=sorted(registered - set(router.classes)),
    )
    return report, {q.text: d for q, d in zip(queries, decisions)}


def task_scores(engine: Engine, registry: Registry, library: Path, decisions: dict[str, RouteDecision],
                inference: InferenceConfig, on_progress: Callable[[str], None] | None = None) -> list[TaskRow]:
    """Per domain benchmark: task score under the base model, the router's choices and oracle routing.

    Base and oracle answers come from `run_benchmark` (the base model's answers are cached);
    only queries the router sent to a *different* adapter are generated again.
    """
    rows = []
    active = active_adapters(registry)
    benchmarks = {}  # domain -> its benchmark: the active adapter's, else the first installed one's
    for entry in sorted(registry.adapters.values(), key=lambda e: (e.name != active.get(e.domain), e.name)):
        if entry.installed:
            benchmarks.setdefault(entry.domain, library / entry.path / "eval" / "benchmark.jsonl")
    for domain, benchmark in sorted(benchmarks.items()):
        name = active.get(domain)  # None: no specialist, so the oracle is the base model
        if on_progress:
            on_progress(f"{domain}: base model, oracle ({name or 'base model'}) and routed answers on {benchmark}")
        if name is not None and name not in engine.adapters:
            engine.load_adapter(library / registry.adapters[name].path, name)
        base = run_benchmark(engine, benchmark, None, inference=inference)
        oracle = run_benchmark(engine, benchmark, name, inference=inference) if name else base
        examples = load_benchmark(benchmark)[: len(oracle.examples)]
        texts = [example_messages(ex.instruction, ex.input)[0]["content"] for ex in examples]
        chosen = [decisions[t].adapter if t in decisions else name for t in texts]
        routed = [o.score if c == name else b.score for c, o, b in zip(chosen, oracle.examples, base.examples)]
        elsewhere = [i for i, c in enumerate(chosen) if c not in (name, None)]
        for other in sorted({chosen[i] for i in elsewhere} - set(engine.adapters)):
            engine.load_adapter(library / registry.adapters[other].path, other)
        if elsewhere:  # one mixed batch: each misrouted query with the adapter it was sent to
            batch = engine.generate_batch([example_messages(examples[i].instruction, examples[i].input)
                                           for i in elsewhere],
                                          max_tokens=inference.max_tokens, batch_size=inference.batch_size,
                                          adapters=[chosen[i] for i in elsewhere])
            for i, text in zip(elsewhere, batch.texts):
                routed[i] = score_answer(oracle.metric, text, examples[i]).value
        per_example = {"base": [r.score for r in base.examples], "router": routed,
                       "oracle": [r.score for r in oracle.examples], "own": [float(c == name) for c in chosen]}
        rows.append(TaskRow(domain, str(benchmark), oracle.metric, len(routed), base.score, sum(routed) / len(routed),
                            oracle.score, sum(c == name for c in chosen) / len(chosen), per_example))
    return rows


@dataclass
class RouterComparison:
    """One router on both test sets, and (with task scoring) what its choices score against oracle routing."""

    router: str
    in_distribution: RoutingReport
    shifted: RoutingReport | None  # None: the library has no router/shifted.jsonl
    task_router: float | None = None  # mean over domains of the task score under this router's choices
    task_oracle: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compare_routers(routers: list[Router], registry: Registry, library: Path, engine: Engine | None = None,
                    inference: InferenceConfig | None = None, on_progress: Callable[[str], None] | None = None,
                    on_count: Callable[[int, int], None] | None = None) -> list[RouterComparison]:
    """Every router on the held-out queries and the shifted set; with `engine` and `inference`, also the task
    score of its choices (misrouted queries are answered again, the rest come from the answer caches)."""
    shifted = shifted_queries(registry, library, "test")
    rows = []
    for router in routers:
        if on_progress:
            on_progress(f"{router.name} router: held-out{' and shifted' if shifted else ''} queries")
        held, decisions = routing_report(router, registry, library, on_count)
        moved = routing_report(router, registry, library, on_count, shifted)[0] if shifted else None
        row = RouterComparison(router.name, held, moved)
        if engine is not None and inference is not None:
            held.task = task = task_scores(engine, registry, library, decisions, inference, on_progress)
            row.task_router = statistics.mean(r.router for r in task)
            row.task_oracle = statistics.mean(r.oracle for r in task)
        rows.append(row)
    return rows


def format_comparison(rows: list[RouterComparison]) -> str:
    def accuracy(report: RoutingReport | None) -> str:
        if report is None:
            return "n/a (no router/shifted.jsonl)"
        return f"{report.accuracy:.3f} [{report.accuracy_ci.low:.3f}, {report.accuracy_ci.high:.3f}]"

    first = rows[0]
    shifted_n = first.shifted.n_queries if first.shifted else 0
    lines = [f"| router | held-out accuracy (n={first.in_distribution.n_queries}) | shifted accuracy (n={shifted_n}) "
             "| median latency | mean task score: routed / oracle |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        task = f"{r.task_router:.3f} / {r.task_oracle:.3f}" if r.task_router is not None else "not run"
        lines.append(f"| {r.router} | {accuracy(r.in_distribution)} | {accuracy(r.shifted)} | "
                     f"{r.in_distribution.latency_ms_median:.1f} ms | {task} |")
    return "\n".join(lines)


def format_report(report: RoutingReport, queries: str = "held-out") -> str:
    lo, hi = report.accuracy_ci.low, report.accuracy_ci.high
    lines = [f"{report.router} router on {report.n_queries} {queries} queries: accuracy {report.accuracy:.3f} "
             f"(95% CI [{lo:.3f}, {hi:.3f}]), abstention {report.abstention_rate:.3f}, "
             f"latency median {report.latency_ms_median:.1f} ms, p95 {report.latency_ms_p95:.1f} ms", ""]
    lines += ["| domain | precision | recall | queries |", "|---|---:|---:|---:|"]
    lines += [f"| {d} | {m['precision']:.3f} | {m['recall']:.3f} | {m['support']} |"
              for d, m in report.per_domain.items()]
    domains = list(report.confusion)
    lines += ["", "Confusion (rows: true domain, columns: routed to)", "",
              "| true \\ routed | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    lines += [f"| {t} | " + " | ".join(str(report.confusion[t][p]) for p in domains) + " |" for t in domains]
    if report.task:
        lines += ["", "Cost of misrouting (task score on each benchmark)", "",
                  "| domain | metric | n | base model | router | oracle | routed to own adapter |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.domain} | {r.metric} | {r.n_examples} | {r.base:.3f} | {r.router:.3f} | {r.oracle:.3f} | "
                  f"{r.routed_to_own_adapter:.1%} |" for r in report.task]
    if report.unroutable:
        lines += ["", f"warning: the router cannot route to {', '.join(report.unroutable)} (registered after it was "
                      "trained): run `locomlx router train`."]
    return "\n".join(lines)
