"""`locomlx registry sync`: what the library needs after a domain is added, in one command.

A new domain's benchmark is one that no other adapter has been scored on, so each adapter whose
eval/results.json lacks it is scored on it, adapter and base model, with the settings its results record,
and the new out-of-domain scores are added to that file (nothing else is evaluated again); the registry
takes the new scores, and the embedding router is retrained when it no longer fits the active adapters.
Run it after installing or promoting an adapter; `registry validate`, `loco check` and the shipped-library
tests name it when it is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from locomlx.engine.engine import Engine
from locomlx.eval.evaluate import add_ood_scores
from locomlx.registry import active_adapters, load_registry
from locomlx.registry.checklist import missing_ood_benchmarks, same_domain_benchmarks
from locomlx.registry.refresh import refresh_registry
from locomlx.router.embedding import (
    router_file,
    router_is_current,
    save_router,
    saved_router_meta,
    train_embedding_router,
)
from locomlx.scoring.results import read_results


@dataclass
class SyncReport:
    evaluated: dict[str, list[str]] = field(default_factory=dict)  # adapter -> benchmarks it was newly scored on
    not_evaluated: list[str] = field(default_factory=list)  # adapters without eval/results.json (left alone)
    registry_changes: list[str] = field(default_factory=list)
    router: str = "current"  # current | retrained | none (no embedding router in the library)


def sync_library(library: Path, on_message: Callable[[str], None] = lambda m: None,
                 on_progress: Callable[[str, int, int], None] | None = None) -> SyncReport:
    library = Path(library)
    registry = load_registry(library)
    base = registry.base_model.id if registry.base_model else None
    report = SyncReport()
    for name, entry in registry.adapters.items():
        if not entry.installed:
            continue
        folder = library / entry.path
        results_file = folder / "eval" / "results.json"
        if not results_file.is_file():
            report.not_evaluated.append(name)
            continue
        results = read_results(results_file)
        missing = missing_ood_benchmarks(folder, library, results, same_domain_benchmarks(registry, library, name))
        if not missing:
            continue
        on_message(f"{name}: scoring it out of domain on {', '.join(str(b) for b in missing)}")
        add_ood_scores(folder, library, missing, base, on_progress)
        report.evaluated[name] = [str(b) for b in missing]
    if report.evaluated:
        report.registry_changes = refresh_registry(library, list(report.evaluated))
    registry = load_registry(library)
    meta = saved_router_meta(library)
    if not active_adapters(registry) or (meta is None and not router_file(library).is_file()):
        report.router = "none"
    elif meta is None or not router_is_current(meta, registry):
        on_message(f"retraining the router {router_file(library)} for the active adapters")
        engine = Engine.load(base)
        trained = train_embedding_router(engine, registry, library, on_progress=on_message,
                                         on_count=(lambda d, t: on_progress("embedded queries", d, t))
                                         if on_progress else None)
        save_router(trained, library)
        report.router = "retrained"
    return report
