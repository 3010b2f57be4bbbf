"""`locomlx registry init | refresh`: start a registry, and bring it in step with the adapter files.

`refresh` re-reads what the registry copies from files: the sha256 of each
adapter's weights (after a deliberate retrain) and its eval/results.json
scores, which also files them in the semester history.
"""

from __future__ import annotations

from pathlib import Path

from locomlx.adapters.format import weights_file
from locomlx.errors import LocomlxError
from locomlx.provenance import file_sha256
from locomlx.registry.compat import inspect_base
from locomlx.registry.history import apply_results
from locomlx.registry.schema import BaseModelInfo, Registry, current_academic_year
from locomlx.registry.store import edit_registry, library_lock, registry_path, save_registry
from locomlx.registry.validate import BENCHMARK, RESULTS
from locomlx.scoring.results import read_results


def init_registry(library: Path, base_model: str, quantization: str, academic_year: str | None = None) -> Registry:
    """Write a registry with no adapters for `base_model`, recording its weights' hash."""
    library = Path(library)
    facts = inspect_base(base_model)
    name, value = facts.fingerprint
    registry = Registry(BaseModelInfo(base_model, quantization, academic_year or current_academic_year(),
                                      **{name: value}))
    with library_lock(library):
        if registry_path(library).exists():
            raise LocomlxError(f"{registry_path(library)} already exists; edit it instead (docs/registry.md)")
        save_registry(library, registry)
    return registry


def refresh_registry(library: Path, names: list[str] | None = None) -> list[str]:
    """Re-read weights hashes, benchmark paths and results of installed adapters (all, or `names`).

    Returns one line per change made.
    """
    library = Path(library)
    changes = []
    with edit_registry(library) as registry:
        for name in names or [n for n, e in registry.adapters.items() if e.installed]:
            entry = registry.entry(name)
            if not entry.installed:
                raise LocomlxError(f"'{name}' is not installed (it only has source: {entry.source}); nothing was "
                                   "changed")
            folder = library / entry.path
            weights = weights_file(folder)
            if entry.sha256 != (sha := file_sha256(weights)):
                entry.sha256 = sha
                changes.append(f"{name}: sha256 of {weights.name} recorded")
            if entry.benchmark is None and (folder / BENCHMARK).is_file():
                entry.benchmark = f"{name}/{BENCHMARK.as_posix()}"
                changes.append(f"{name}: benchmark {entry.benchmark}")
            if (folder / RESULTS).is_file():
                results = read_results(folder / RESULTS)
                if entry.scores is None or entry.scores.differences(results):
                    apply_results(registry, name, results)
                    changes.append(f"{name}: scores copied from {folder / RESULTS}")
    return changes
