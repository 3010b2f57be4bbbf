"""`locomlx check NAME`: the pull-request checklist of CONTRIBUTING.md, each item ticked or crossed for one adapter.

The same items as `.github/PULL_REQUEST_TEMPLATE.md`, checked from the files: what a reviewer would look
for, with the fix for each crossed item. Items marked not required (passing the acceptance bar) are shown
but do not fail the check: a pull request may report an adapter that does not pass yet.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from locomlx.adapters.format import WEIGHT_FILES
from locomlx.data.checks import check_file, leakage_problems, library_benchmarks
from locomlx.data.records import read_examples
from locomlx.data.training_log import unfilled_lines
from locomlx.errors import LocomlxError
from locomlx.provenance import file_sha256
from locomlx.registry.schema import Registry
from locomlx.registry.store import load_registry
from locomlx.scoring.bar import MAX_OOD_DEGRADATION
from locomlx.scoring.results import read_results

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy")
SYNC = "loco registry sync"


@dataclass
class Item:
    label: str
    ok: bool
    detail: str = ""
    required: bool = True

    def line(self) -> str:
        mark = "✔" if self.ok else ("✘" if self.required else "·")
        return f"{mark} {self.label}" + (f": {self.detail}" if self.detail else "")

    def to_dict(self) -> dict:
        return asdict(self)


def _files(folder: Path) -> Item:
    needed = ["adapter_config.json", "training/dataset.jsonl", "training/TRAINING_LOG.md", "eval/benchmark.jsonl"]
    missing = [n for n in needed if not (folder / n).is_file()]
    if not any((folder / n).is_file() for n in WEIGHT_FILES):
        missing.append(WEIGHT_FILES[0])
    if _data_script(folder) is None:
        missing.append("training/generate.py (the script that builds the data)")
    return Item("adapter files", not missing, f"missing {', '.join(missing)}" if missing else
                "weights, config, data, benchmark, training log and data script present")


def _data_script(folder: Path) -> Path | None:
    """The script that builds the adapter's data: a .py in training/, else one its TRAINING_LOG.md names that
    exists in the library's project (the shipped adapters' builders live in scripts/data/)."""
    scripts = sorted((folder / "training").glob("*.py"))
    if scripts:
        return scripts[0]
    log = folder / "training" / "TRAINING_LOG.md"
    named = re.findall(r"[\w./-]+\.py\b", log.read_text(encoding="utf-8")) if log.is_file() else []
    project = folder.resolve().parent.parent
    return next((project / name for name in named if (project / name).is_file()), None)


def _sizes_and_leaks(folder: Path, library: Path) -> list[Item]:
    train, bench = folder / "training" / "dataset.jsonl", folder / "eval" / "benchmark.jsonl"
    if not (train.is_file() and bench.is_file()):
        return [Item("500+ training / 50+ benchmark examples", False, "the data files are missing")]
    others = [b for b in library_benchmarks(library) if b.resolve() != bench.resolve()]
    train_report = check_file(train, "train")
    bench_report = check_file(bench, "benchmark")
    size_errors = train_report.errors + bench_report.errors
    leaks = leakage_problems(train_report.examples, str(train), {str(b): read_examples(b)[0] for b in [bench, *others]})
    return [
        Item("500+ training / 50+ benchmark examples, well-formed",
             not size_errors, f"{len(train_report.examples)} training, {len(bench_report.examples)} benchmark"
             + (f"; {size_errors[0]} (loco data check lists all)" if size_errors else "")),
        Item("no training example leaks a benchmark", not leaks,
             f"{len(leaks)} problems, first: {leaks[0]}" if leaks else f"checked against {1 + len(others)} benchmarks"),
    ]


def _training_log(folder: Path) -> Item:
    log = folder / "training" / "TRAINING_LOG.md"
    if not log.is_file():
        return Item("TRAINING_LOG.md filled in", False,
                    f"{log} is missing; copy locomlx/data/TRAINING_LOG_TEMPLATE.md there")
    lines = unfilled_lines(log.read_text(encoding="utf-8"))
    return Item("TRAINING_LOG.md filled in", not lines,
                f"{log}: line(s) {', '.join(map(str, lines[:8]))} still say '(fill in)'" if lines else
                "sources, generation, filtering, review and limitations written")


def _evaluation(folder: Path, library: Path, same_domain: list[Path]) -> list[Item]:
    path = folder / "eval" / "results.json"
    command = f"python scripts/evaluate.py --adapter {folder} --benchmark {folder / 'eval' / 'benchmark.jsonl'} " \
              f"--ood-limit 100 --output {path}"
    try:
        results = read_results(path)
    except LocomlxError as exc:
        return [Item("evaluated against the base model", False, f"{exc}; run {command}")]
    bench = folder / "eval" / "benchmark.jsonl"
    current = bench.is_file() and results["benchmark_sha256"] == file_sha256(bench)
    missing = [str(b) for b in missing_ood_benchmarks(folder, library, results, same_domain)]
    return [
        Item("evaluated against the base model", current,
             f"{results['metric']} {results['adapter_score']:.3f} vs base {results['base_model_score']:.3f}, "
             f"p = {results['p_value']:.2g}" if current else f"eval/results.json is for another benchmark file; "
             f"run {command}"),
        Item("evaluated out of domain on every other domain's benchmark", not missing,
             f"not on {', '.join(missing)}; run {SYNC} (or the evaluation again)" if missing else
             f"{len(results['ood'])} benchmarks, largest loss {results['ood_degradation']:.3f}"),
        Item("passes the acceptance bar (needed to be promoted)", results["passed"],
             "significant in-domain gain, out-of-domain within 5 points" if results["passed"] else
             ("no significant in-domain gain; " if not results["significant"] else "")
             + (f"loses {results['ood_degradation']:.3f} > {MAX_OOD_DEGRADATION} out of domain; "
                "the evaluation prints the --replay command that fixes it"
                if results["ood_degradation"] > MAX_OOD_DEGRADATION else ""), required=False),
    ]


def _registered(name: str, folder: Path, library: Path) -> Item:
    install = f"loco adapters install {folder} --domain DOMAIN"
    try:
        registry = load_registry(library)
    except LocomlxError as exc:
        return Item("registered in registry.yaml", False, str(exc))
    entry = registry.adapters.get(name)
    if entry is None or not entry.installed:
        return Item("registered in registry.yaml", False, f"'{name}' is not registered; run {install}")
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None or entry.sha256 != file_sha256(weights):
        return Item("registered in registry.yaml", False, f"the recorded sha256 is not the weights'; run "
                                                          f"loco registry refresh {name}")
    return Item("registered in registry.yaml", True, f"domain {entry.domain}, version {entry.version}"
                + (", active" if entry.active else ""))


def _no_pickles(folder: Path) -> Item:
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    return Item("no pickled files (safetensors only)", not found, f"remove {', '.join(found)}" if found else "")


def same_domain_benchmarks(registry: Registry, library: Path, name: str) -> list[Path]:
    """The benchmarks of the installed adapters in `name`'s domain (its own included)."""
    entry = registry.adapters[name]
    return [library / e.path / "eval" / "benchmark.jsonl" for e in registry.adapters.values()
            if e.installed and e.domain == entry.domain]


def missing_ood_benchmarks(folder: Path, library: Path, results: dict, exclude: list[Path] = ()) -> list[Path]:
    """The library's benchmarks (one per content; not the adapter's own nor those in `exclude`, its domain's)
    that its results have no out-of-domain score for: a domain added after the adapter was evaluated."""
    skip = {file_sha256(p) for p in [folder / "eval" / "benchmark.jsonl", *exclude] if p.is_file()}
    scored = {_entry_sha256(entry, library) for entry in results["ood"]}
    missing, seen = [], set()
    for benchmark in library_benchmarks(library):
        sha = file_sha256(benchmark)
        if sha not in skip and sha not in scored and sha not in seen:
            seen.add(sha)
            missing.append(benchmark)
    return missing


def _entry_sha256(entry: dict, library: Path) -> str | None:
    """The sha256 of an out-of-domain entry's benchmark: recorded, else read from its path (as written, which is
    relative to where the evaluation ran, or relative to the library's parent folder)."""
    if entry.get("benchmark_sha256"):
        return entry["benchmark_sha256"]
    for path in (Path(entry["benchmark"]), Path(library).parent / entry["benchmark"]):
        if path.is_file():
            return file_sha256(path)
    return None


def check_adapter(library: Path, name: str) -> list[Item]:
    """Every checklist item for the adapter `name` of `library`."""
    library = Path(library)
    folder = library / name
    if not folder.is_dir():
        raise LocomlxError(f"No adapter folder {folder}; give the adapter's name in the library ({library}).")
    try:
        registry = load_registry(library)
        same_domain = same_domain_benchmarks(registry, library, name) if name in registry.adapters else []
    except LocomlxError:
        same_domain = []
    return [_files(folder), *_sizes_and_leaks(folder, library), _training_log(folder),
            *_evaluation(folder, library, same_domain), _registered(name, folder, library), _no_pickles(folder)]
