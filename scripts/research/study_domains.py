"""Which of a library's domains a study covers. `--domains` names some; by default every domain with an active
adapter. A named domain without an active adapter stops the study before it trains or answers anything, since
each study reuses the active adapter's recipe and benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

from locomlx.registry import Registry, active_adapters


def comma_list(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option (`--domains a,b`) as ('a', 'b'); None when it is not given."""
    return tuple(d.strip() for d in text.split(",") if d.strip()) if text else None


def studied_adapters(registry: Registry, library: Path, domains: tuple[str, ...] | None) -> dict[str, str]:
    """Domain -> its active adapter, in the order `domains` names them (sorted when it names none)."""
    active = active_adapters(registry)
    missing = [d for d in domains or () if d not in active]
    if missing:
        sys.exit(f"error: {library} has no active adapter for {', '.join(missing)}; the study reuses each "
                 f"domain's recipe and benchmark. Active: {', '.join(sorted(active))}.")
    return {d: active[d] for d in (domains or sorted(active))}
