"""`locomlx leaderboard`: adapters ranked within each domain by their registered scores.

Rank order: adapter score, then improvement over the base model, then the
smaller out-of-domain degradation (`ranking_key`, which `locomlx report` uses
too). Scores are only comparable on one benchmark, so a domain whose adapters
were scored on different benchmarks (by content: two copies of one file are
one benchmark), or on different numbers of examples, says so. Adapters without
scores are listed unranked; an adapter's earlier versions follow it, unranked,
with the scores the history keeps for them. "significant" (the in-domain gain)
and "passes" (the whole acceptance bar, out of domain included) are separate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from locomlx.provenance import file_sha256
from locomlx.registry.history import ranking_key
from locomlx.registry.schema import Registry, version_key
from locomlx.scoring.bar import within_ood_bar


@dataclass
class Ranking:
    domain: str
    rank: int | None  # None: not evaluated yet
    name: str
    active: bool
    semester: str | None
    metric: str | None
    benchmark: str | None
    adapter_score: float | None = None
    base_model_score: float | None = None
    improvement: float | None = None
    ood_degradation: float | None = None
    p_value: float | None = None
    significant: bool | None = None
    benchmark_sha256: str | None = None  # None when the library's copy was not read
    version: str | None = None
    previous: bool = False  # an earlier version, from the history
    n_examples: int | None = None
    ood_limit: int | None = None

    @property
    def passes(self) -> bool | None:
        if self.significant is None or self.ood_degradation is None:
            return None
        return bool(self.significant) and within_ood_bar(self.ood_degradation)


def _benchmark_sha256(library: Path | None, benchmark: str | None) -> str | None:
    path = library / benchmark if library is not None and benchmark else None
    return file_sha256(path) if path is not None and path.is_file() else None


def leaderboard(registry: Registry, domain: str | None = None, library: Path | None = None) -> dict[str, list[Ranking]]:
    """Domain -> its adapters, best first. With the `library` folder, benchmarks are compared by content."""
    board: dict[str, list[Ranking]] = {}
    for entry in registry.adapters.values():
        if domain is None or entry.domain == domain:
            latest = _latest_record(registry, entry.name, entry.version)
            board.setdefault(entry.domain, []).append(Ranking(
                entry.domain, None, entry.name, entry.active, entry.semester, entry.metric, entry.benchmark,
                **(asdict(entry.scores) if entry.scores else {}),
                benchmark_sha256=_benchmark_sha256(library, entry.benchmark), version=entry.version,
                n_examples=latest.n_examples if latest else None, ood_limit=latest.ood_limit if latest else None))
    for rankings in board.values():
        rankings.sort(key=lambda r: (r.adapter_score is None, ranking_key(r.adapter_score or 0, r.improvement or 0,
                                                                          r.ood_degradation or 0, r.name)))
        for position, ranking in enumerate(r for r in rankings if r.adapter_score is not None):
            ranking.rank = position + 1
        for ranking in list(rankings):
            at = rankings.index(ranking) + 1
            rankings[at:at] = _previous_versions(registry, ranking)
    return dict(sorted(board.items()))


def _latest_record(registry: Registry, name: str, version: str):
    records = [r for r in registry.history if r.adapter == name and (r.version or version) == version]
    return max(records, key=lambda r: r.recorded) if records else None


def _previous_versions(registry: Registry, current: Ranking) -> list[Ranking]:
    """Rows for the earlier versions of `current`'s adapter, newest first, from the history."""
    latest: dict[str, object] = {}
    for record in registry.history:
        if record.adapter == current.name and record.version and record.version != current.version:
            if record.version not in latest or record.recorded >= latest[record.version].recorded:
                latest[record.version] = record
    rows = []
    for version in sorted(latest, key=version_key, reverse=True):
        r = latest[version]
        rows.append(Ranking(current.domain, None, current.name, False, r.semester, current.metric, current.benchmark,
                            r.adapter_score, r.base_model_score, r.improvement, r.ood_degradation,
                            version=version, previous=True, n_examples=r.n_examples, ood_limit=r.ood_limit))
    return rows


def mixed_benchmarks(rankings: list[Ranking]) -> bool:
    return len({r.benchmark_sha256 or r.benchmark for r in rankings if r.rank is not None}) > 1


def size_notes(rankings: list[Ranking]) -> list[str]:
    """A note for each row scored on another number of examples, in or out of domain, than the domain's best."""
    scored = [r for r in rankings if r.adapter_score is not None and r.n_examples is not None]
    if not scored:
        return []
    first = scored[0]
    notes = []
    for r in scored[1:]:
        if r.n_examples != first.n_examples:
            notes.append(f"{r.name} {r.version} was scored on {r.n_examples} examples, "
                         f"{first.name} {first.version} on {first.n_examples}")
        if r.ood_limit != first.ood_limit:
            notes.append(f"{r.name} {r.version}'s out-of-domain drop is over {_ood_size(r.ood_limit)}, "
                         f"{first.name} {first.version}'s over {_ood_size(first.ood_limit)}")
    return notes


def _ood_size(limit: int | None) -> str:
    return "every example of each other benchmark" if limit is None else f"the first {limit} of each other benchmark"


def _yes(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def _cells(r: Ranking) -> list[str]:
    name = r.name + (" *" if r.active else "")
    version = (r.version or "") + (" (earlier)" if r.previous else "")
    if r.adapter_score is None:
        return ["-", name, version, "not evaluated", "", "", "", "", r.semester or ""]
    return ["-" if r.rank is None else str(r.rank), name, version, f"{r.adapter_score:.3f}", f"{r.improvement:+.3f}",
            f"{r.ood_degradation:.3f}", _yes(r.significant), _yes(r.passes), r.semester or ""]


HEADINGS = ["#", "adapter", "version", "score", "vs base", "ood drop", "significant", "passes bar", "semester"]
MIXED_NOTE = "scores come from different benchmarks and are not directly comparable"


def format_leaderboard(board: dict[str, list[Ranking]]) -> str:
    if not board:
        return "No adapters registered."
    widths = [3, 26, 16, 13, 8, 8, 11, 10, 12]
    lines = []
    for domain, rankings in board.items():
        lines.append(f"{domain} ({rankings[0].metric or 'metric unknown'}; * = active)")
        lines.append("  " + " ".join(h.ljust(w) for h, w in zip(HEADINGS, widths)).rstrip())
        lines += ["  " + " ".join(c.ljust(w) for c, w in zip(_cells(r), widths)).rstrip() for r in rankings]
        if mixed_benchmarks(rankings):
            lines.append(f"  note: {MIXED_NOTE}")
        lines += [f"  note: {note}" for note in size_notes(rankings)]
    return "\n".join(lines)


def format_markdown(board: dict[str, list[Ranking]], academic_year: str | None) -> str:
    """A page the docs can include: one table per domain."""
    year = f" ({academic_year})" if academic_year else ""
    lines = [f"# Adapter leaderboard{year}", "",
             "Generated by `locomlx leaderboard --markdown` from the adapter registry; **bold** = the domain's "
             "active adapter. Scores are on each adapter's own benchmark; ood drop is the largest loss against the "
             "base model on the other benchmarks."]
    if not board:
        lines += ["", "No adapters registered."]
    for domain, rankings in board.items():
        lines += ["", f"## {domain}", "", "| " + " | ".join(HEADINGS) + " |", "|" + " --- |" * len(HEADINGS)]
        for r in rankings:
            cells = _cells(r)
            cells[1] = f"**{r.name}**" if r.active else r.name
            lines.append("| " + " | ".join(cells) + " |")
        if mixed_benchmarks(rankings):
            lines += ["", f"Note: {MIXED_NOTE}."]
        lines += [f"\nNote: {note}." for note in size_notes(rankings)]
    return "\n".join(lines) + "\n"
