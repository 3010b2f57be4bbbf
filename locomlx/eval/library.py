"""The whole library at once: `locomlx registry sync` (what a new domain needs) and `locomlx eval --all`.

`registry sync`: a new domain's benchmark is one that no other adapter has been scored on, so each adapter whose
eval/results.json lacks it is scored on it, adapter and base model, with the settings its results record,
and the new out-of-domain scores are added to that file (nothing else is evaluated again); the registry
takes the new scores, and the embedding router is retrained when it no longer fits the active adapters.
Run it after installing or promoting an adapter; `registry validate`, `loco check` and the shipped-library
tests name it when it is needed.

`eval --all`: every installed adapter evaluated as `locomlx eval ADAPTER` would, its answers generated on all
the ranks `mlx.launch` started (docs/distributed.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from locomlx.distributed import World
from locomlx.engine.engine import Engine
from locomlx.eval.evaluate import Evaluation, add_ood_scores, evaluate_adapter, ood_benchmarks
from locomlx.eval.run import InferenceConfig
from locomlx.eval.shards import ShardedAnswers, answer_jobs, plan_jobs
from locomlx.registry import active_adapters, load_registry
from locomlx.registry.checklist import missing_ood_benchmarks, same_domain_benchmarks
from locomlx.registry.refresh import refresh_registry
from locomlx.router.embedding import (
    pending_feedback,
    router_file,
    router_is_current,
    save_router,
    saved_router_meta,
    train_embedding_router,
)
from locomlx.router.feedback import read_feedback, routing_labels
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
    elif meta is None or not router_is_current(meta, registry) or pending_feedback(meta, library):
        labels = routing_labels(read_feedback(library)) or None
        why = "the active adapters" + (f" and {len(labels)} queries with feedback" if labels else "")
        on_message(f"retraining the router {router_file(library)} for {why}")
        engine = Engine.load(base)
        trained = train_embedding_router(engine, registry, library, feedback=labels, on_progress=on_message,
                                         on_count=(lambda d, t: on_progress("embedded queries", d, t))
                                         if on_progress else None)
        save_router(trained, library)
        report.router = "retrained"
    return report


@dataclass
class LibraryEvaluation:
    evaluations: list[Evaluation]  # rank 0 only; the other ranks only generate
    skipped: list[str]  # installed adapters without a benchmark, which cannot be evaluated
    answers: ShardedAnswers
    registry_changes: list[str] = field(default_factory=list)


def evaluate_library(library: Path, world: World, inference: InferenceConfig = InferenceConfig(),
                     ood_limit: int | None = None, on_message: Callable[[str], None] = lambda m: None,
                     on_progress: Callable[[str, int, int], None] | None = None) -> LibraryEvaluation:
    """`locomlx eval ADAPTER` for every installed adapter of the library, then `registry refresh`.

    Every answer those evaluations need (each adapter on its own and every other benchmark, the base on each)
    is generated first, shared among the world's ranks (eval/shards.py); rank 0 then runs the evaluations on
    the gathered answers, so it writes exactly the files, caches and registry scores a one-process run writes.
    """
    library = Path(library)
    registry = load_registry(library)
    base = registry.base_model.id if registry.base_model else None
    folders = {name: library / entry.path for name, entry in registry.adapters.items() if entry.installed}
    skipped = [name for name, folder in folders.items() if not (folder / "eval" / "benchmark.jsonl").is_file()]
    folders = {name: folder for name, folder in folders.items() if name not in skipped}
    engine = Engine.load(base)
    work = []
    for folder in folders.values():
        engine.load_adapter(folder, folder.name)
        own = folder / "eval" / "benchmark.jsonl"
        for benchmark, limit in [(own, inference.limit)] + [(b, ood_limit or inference.limit)
                                                            for b in ood_benchmarks(library, own)]:
            work += [(folder.name, benchmark, limit), (None, benchmark, limit)]
    jobs = plan_jobs(engine, work, inference)
    on_message(f"{len(folders)} adapters, {len(jobs)} answer sets to generate or reuse"
               + (f", on {world.size} ranks" if world.size > 1 else ""))
    answers = answer_jobs(engine, jobs, inference, world, on_progress)
    report = LibraryEvaluation([], skipped, answers)
    if not world.is_leader:
        return report
    for folder in folders.values():
        report.evaluations.append(evaluate_adapter(folder, library, base, inference=inference, ood=True,
                                                   on_progress=on_progress, ood_limit=ood_limit))
    report.registry_changes = refresh_registry(library, list(folders))
    return report
