"""Ensembles: every registered adapter of one domain answers, and they vote.

The registry (`locomlx.registry`) says which adapters share a domain; they are
loaded beside the base model once and answer together in one mixed batch.
"""

from __future__ import annotations

from pathlib import Path

from locomlx.errors import LocomlxError
from locomlx.registry import load_registry


def ensemble_members(library: Path, adapter: str) -> list[tuple[str, Path]]:
    """(name, directory) of each installed adapter registered in `adapter`'s domain, `adapter` included."""
    registry = load_registry(library)
    entry = registry.adapters.get(adapter)
    if entry is None:
        known = ", ".join(registry.adapters) or "none"
        raise LocomlxError(f"--ensemble needs '{adapter}' in the registry of {library} to know its domain "
                           f"(registered: {known}); register it, or leave out --ensemble.")
    members = [e for e in registry.adapters.values() if e.domain == entry.domain and e.installed]
    return [(e.name, Path(library) / e.path) for e in sorted(members, key=lambda e: e.name)]


def load_members(engine, library: Path, adapter: str) -> list[str]:
    """Make every member of `adapter`'s domain resident (those already loaded stay); returns their names."""
    names = []
    for name, path in ensemble_members(library, adapter):
        if name not in engine.adapters:
            engine.load_adapter(path, name)
        names.append(name)
    return names
