"""`locomlx promote`: make an adapter the active one of its domain, demoting the previous one.

An adapter is promoted only on the evaluation's own pass rule: a significant
in-domain gain (p < 0.05, improvement > 0) and out-of-domain degradation of at
most 5 points. `force` overrides the rule, never the need to be installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from locomlx.errors import LocomlxError
from locomlx.registry.schema import AdapterEntry
from locomlx.registry.store import edit_registry
from locomlx.scoring.bar import MAX_OOD_DEGRADATION, within_ood_bar


def promotion_blockers(entry: AdapterEntry) -> list[str]:
    """Why the scores do not justify promoting `entry` (empty when they do)."""
    scores = entry.scores
    if scores is None:
        return [f"it has no scores; evaluate it first: locomlx eval {entry.name}"]
    blockers = []
    if not scores.significant:
        blockers.append(f"its gain is not significant (improvement {scores.improvement:+.3f}, "
                        f"p = {scores.p_value:.3g})")
    if not within_ood_bar(scores.ood_degradation):
        blockers.append(f"it loses {scores.ood_degradation:.3f} out of domain (at most {MAX_OOD_DEGRADATION} allowed)")
    return blockers


@dataclass
class Promotion:
    name: str
    domain: str
    previous: str | None  # the adapter it replaced as active
    overridden: list[str] = field(default_factory=list)  # blockers that --force overrode


def promote(library: Path, name: str, force: bool = False) -> Promotion:
    """Activate `name` in its domain, demoting the active one (locked, atomic)."""
    with edit_registry(library) as registry:
        entry = registry.entry(name)
        if not entry.installed:
            raise LocomlxError(f"'{name}' is not installed (it only has source: {entry.source}); "
                               f"install it first: locomlx adapters install {entry.source} --name {name}")
        blockers = promotion_blockers(entry)
        if blockers and not force:
            raise LocomlxError(f"Not promoting '{name}': {'; '.join(blockers)}. Use --force to promote it anyway.")
        previous = [e for e in registry.adapters.values() if e.domain == entry.domain and e.active and e is not entry]
        for other in previous:
            other.active = False
        entry.active = True
    return Promotion(name, entry.domain, previous[0].name if previous else None, blockers)
