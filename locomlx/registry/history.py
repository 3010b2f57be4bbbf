"""Scores and their semester archive.

`record_scores` copies an adapter's eval/results.json into the registry (locked,
atomic) and files the scores in `history` under the adapter's semester: one
record per adapter and semester, so re-evaluating in the same semester replaces
it. `semester_trend` is what `locomlx report` prints: per domain and semester,
the best adapter, its gain over the base model, and the change since the
previous semester.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from locomlx.errors import LocomlxError
from locomlx.registry.schema import AdapterEntry, HistoryRecord, Registry, Scores, current_semester, semester_key
from locomlx.registry.store import edit_registry
from locomlx.scoring.results import validate_results


def ranking_key(adapter_score: float, improvement: float, ood_degradation: float, name: str) -> tuple:
    """Best first: the higher score, then the larger gain over the base, then the smaller out-of-domain loss,
    then the name; the leaderboard and the semester report both rank by it, so they agree on ties."""
    return -adapter_score, -improvement, ood_degradation, name


def apply_results(registry: Registry, name: str, results: dict, day: datetime.date | None = None) -> AdapterEntry:
    """Put `results` (a results.json record) into the registry in memory: scores, metric, history."""
    entry = registry.entry(name)
    problems = validate_results(results, f"results for {name}")
    if problems:
        raise LocomlxError("; ".join(problems))
    day = day or datetime.date.today()
    entry.scores = Scores.from_results(results)
    entry.metric = entry.metric or results["metric"]
    semester = entry.semester or current_semester(day)
    record = HistoryRecord(semester, name, entry.domain, results["adapter_score"], results["base_model_score"],
                           results["improvement"], results["ood_degradation"], day.isoformat(), entry.version,
                           results["n_examples"], results["inference"].get("ood_limit"))
    registry.history = [r for r in registry.history
                        if (r.semester, r.adapter, r.version or entry.version) != (semester, name, entry.version)]
    registry.history.append(record)
    return entry


def record_scores(library: Path, name: str, results: dict) -> AdapterEntry:
    """Record an evaluation of the registered adapter `name` (locked, atomic); returns its updated entry."""
    with edit_registry(library) as registry:
        return apply_results(registry, name, results)


@dataclass
class TrendPoint:
    """One domain in one semester: its best adapter then, and the change since the semester before."""

    domain: str
    semester: str
    best_adapter: str
    adapter_score: float
    base_model_score: float
    improvement: float
    adapters: int  # adapters of the domain with scores that semester
    change: float | None  # best adapter_score minus the previous semester's (None for the first)


def semester_trend(registry: Registry, domain: str | None = None) -> dict[str, list[TrendPoint]]:
    """Domain -> its semesters in order, from the history."""
    by_domain: dict[str, dict[str, list[HistoryRecord]]] = {}
    for record in registry.history:
        if domain is None or record.domain == domain:
            by_domain.setdefault(record.domain, {}).setdefault(record.semester, []).append(record)
    trend = {}
    for name in sorted(by_domain):
        points, previous = [], None
        for semester in sorted(by_domain[name], key=semester_key):
            records = by_domain[name][semester]
            best = min(records, key=lambda r: ranking_key(r.adapter_score, r.improvement, r.ood_degradation,
                                                          r.adapter))
            change = None if previous is None else best.adapter_score - previous
            points.append(TrendPoint(name, semester, best.adapter, best.adapter_score, best.base_model_score,
                                     best.improvement, len(records), change))
            previous = best.adapter_score
        trend[name] = points
    return trend


def format_trend(trend: dict[str, list[TrendPoint]]) -> str:
    if not trend:
        return "No scores recorded yet: `locomlx eval ADAPTER` records them for registered adapters."
    lines = []
    for domain, points in trend.items():
        lines += [domain, f"  {'semester':<13} {'best adapter':<24} {'score':>6} {'vs base':>8} {'change':>8} "
                          f"{'adapters':>8}"]
        for p in points:
            change = "" if p.change is None else f"{p.change:+.3f}"
            lines.append(f"  {p.semester:<13} {p.best_adapter:<24} {p.adapter_score:>6.3f} {p.improvement:>+8.3f} "
                         f"{change:>8} {p.adapters:>8}")
    return "\n".join(lines)
