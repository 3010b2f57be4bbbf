"""`locomlx registry validate`: every problem of a library and its registry, each with file, line and field.

Beyond the schema (schema.py): files that must exist, weights that changed
since they were recorded, eval/results.json disagreeing with the recorded
scores, adapters that do not fit the base model, benchmarks and training
sets that are too small or overlap (the checks of `locomlx data check`), and
adapter folders nobody registered.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from locomlx.adapters.format import read_adapter, weights_file
from locomlx.adapters.library import list_adapters
from locomlx.data.checks import check_file, library_benchmarks
from locomlx.data.records import Problem
from locomlx.errors import LocomlxError
from locomlx.provenance import file_sha256
from locomlx.registry.checklist import missing_ood_benchmarks, same_domain_benchmarks
from locomlx.registry.compat import BaseFacts, incompatibility, inspect_base
from locomlx.registry.schema import AdapterEntry, Registry
from locomlx.registry.staging import folder_bytes, stale_staging
from locomlx.registry.store import read_registry, registry_path
from locomlx.scoring.results import read_results

# Inside an adapter folder (adapters/README.md).
DATASET = Path("training") / "dataset.jsonl"
BENCHMARK = Path("eval") / "benchmark.jsonl"
RESULTS = Path("eval") / "results.json"


class _Validation:
    def __init__(self, library: Path, registry: Registry):
        self.library = Path(library)
        self.registry = registry
        self.where = str(registry_path(library))
        self.problems: list[Problem] = []

    def error(self, keys: tuple, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(self.where, self.registry.line(*keys), message, severity,
                                     ".".join(map(str, keys))))

    @cached_property
    def base(self) -> BaseFacts | None:
        """The base model's facts, looked up once; None (and one problem) when it cannot be resolved."""
        try:
            return inspect_base(self.registry.base_model.id)
        except LocomlxError as exc:
            self.error(("base_model", "id"), f"cannot be resolved: {exc}")
            return None

    def check_base(self) -> None:
        info = self.registry.base_model
        if info is None or self.base is None:
            return
        name, actual = self.base.fingerprint
        recorded = getattr(info, name)
        if recorded is None:
            self.error(("base_model", name), f"is missing for this base model; add {name}: {actual}")
        elif recorded != actual:
            self.error(("base_model", name), f"is {recorded} but the base model {info.id} has {actual}: the "
                                             "adapters were registered for other weights; fix the id or the hash")

    def check_entry(self, entry: AdapterEntry) -> bool:
        """Files, weights, fit and results of an installed adapter; False when its folder is missing."""
        keys = ("adapters", entry.name)
        folder = self.library / entry.path
        if not folder.is_dir():
            self.error(keys + ("path",), f"folder {folder} does not exist; install the adapter "
                                         f"(locomlx adapters install) or remove the entry")
            return False
        try:
            adapter = read_adapter(folder, entry.name)
        except LocomlxError as exc:
            self.error(keys + ("path",), str(exc))
            return True
        weights = weights_file(folder)
        if entry.sha256 is None:
            self.error(keys + ("sha256",), f"is missing; record it: locomlx registry refresh {entry.name}")
        elif entry.sha256 != file_sha256(weights):
            self.error(keys + ("sha256",),
                       f"does not match {weights}: the weights changed since they were registered; "
                       f"if you retrained it, run: locomlx registry refresh {entry.name}")
        if self.registry.base_model and self.base:
            reason = incompatibility(adapter, self.base)
            if reason:
                self.error(keys + ("path",), f"does not fit the base model: {reason}")
        self.check_results(entry)
        return True

    def check_results(self, entry: AdapterEntry) -> None:
        keys = ("adapters", entry.name)
        path = self.library / entry.path / RESULTS
        if not path.is_file():
            if entry.scores is not None:
                self.error(keys + ("scores",), f"{path} does not exist to back these scores; evaluate: "
                                               f"locomlx eval {entry.name}")
            return
        try:
            results = read_results(path)
        except LocomlxError as exc:
            self.problems += [Problem(str(path), None, line) for line in str(exc).splitlines()]
            return
        fix = f"copy the results with: locomlx registry refresh {entry.name}"
        if entry.scores is None:
            self.error(keys + ("scores",), f"is missing though {path} exists; {fix}")
        else:
            for name, recorded, actual in entry.scores.differences(results):
                self.error(keys + ("scores", name), f"is {recorded} but {path} says {actual}; {fix}")
        if entry.metric is not None and entry.metric != results["metric"]:
            self.error(keys + ("metric",), f"is {entry.metric} but {path} was scored with {results['metric']}; "
                                           "fix the metric or re-evaluate")
        missing = missing_ood_benchmarks(self.library / entry.path, self.library, results,
                                         same_domain_benchmarks(self.registry, self.library, entry.name))
        if missing:
            self.error(keys + ("scores", "ood_degradation"),
                       f"has no out-of-domain score on {', '.join(map(str, missing))} (a domain added after "
                       f"{entry.name} was evaluated); score it there with: loco registry sync", "warning")
        benchmark = self.library / entry.benchmark if entry.benchmark else None
        if benchmark and benchmark.is_file() and file_sha256(benchmark) != results["benchmark_sha256"]:
            self.error(keys + ("benchmark",), f"{benchmark} changed after {path} was written; re-evaluate: "
                                              f"locomlx eval {entry.name}")

    def check_data(self, entries: list[AdapterEntry]) -> None:
        """Benchmarks (>= 50 examples) and training sets (>= 500, no overlap with any benchmark)."""
        benchmarks: dict[Path, Path] = {p.resolve(): p for p in library_benchmarks(self.library)}
        for entry in entries:
            keys = ("adapters", entry.name, "benchmark")
            if entry.benchmark is None:
                self.error(keys, f"is missing; add benchmark: {entry.name}/{BENCHMARK.as_posix()}")
            elif not (self.library / entry.benchmark).is_file():
                self.error(keys, f"{self.library / entry.benchmark} does not exist; fix the path or add the file")
            else:
                benchmarks.setdefault((self.library / entry.benchmark).resolve(), self.library / entry.benchmark)
        for benchmark in benchmarks.values():
            self.problems += check_file(benchmark, "benchmark").problems
        for entry in entries:
            dataset = self.library / entry.path / DATASET
            if dataset.is_file():
                self.problems += check_file(dataset, "train", benchmarks=list(benchmarks.values())).problems
            else:
                self.error(("adapters", entry.name, "path"), f"{dataset} does not exist, so its size and overlap "
                                                             "with the benchmarks cannot be checked", "warning")

    def check_unregistered(self) -> None:
        for name in list_adapters(self.library):
            if name not in self.registry.adapters:
                self.error(("adapters",),
                           f"folder {self.library / name} holds an adapter that is not registered; "
                           f"register it: locomlx adapters install {self.library / name} --domain DOMAIN",
                           "warning")


def validate_library(library: Path) -> list[Problem]:
    """Every problem of the library at `library` (errors and warnings); empty when all is well."""
    path = registry_path(library)
    if not path.is_file():
        return [Problem(str(path), None, "does not exist; create it: locomlx registry init --quantization Q4_1")]
    registry, problems = read_registry(library)
    validation = _Validation(library, registry)
    validation.problems = problems
    validation.check_base()
    present = [entry for entry in registry.adapters.values() if entry.installed and validation.check_entry(entry)]
    validation.check_data(present)
    validation.check_unregistered()
    return validation.problems + staging_problems(library)


def staging_problems(library: Path) -> list[Problem]:
    """Warnings for what interrupted installs and upgrades left in the library."""
    installs, previous = stale_staging(library)
    problems = []
    if installs:
        size = sum(folder_bytes(f) for f in installs) / 1e6
        problems.append(Problem(str(library), None, f"{len(installs)} staging folders of interrupted installs "
                                                    f"({', '.join(f.name for f in installs[:3])}, {size:.1f} MB); the "
                                                    "next install removes them, or delete them", severity="warning"))
    for folder in previous:
        problems.append(Problem(str(folder), None, "an upgrade was interrupted here; it holds the replaced version "
                                                   "of the adapter: move it back into the library if that adapter "
                                                   "is missing, else delete it", severity="warning"))
    return problems
