"""`locomlx adapters install | remove`: bring adapters into the library and take them out.

An install is staged in a hidden folder inside the library, checked there
(safe files, safetensors weights, shapes that fit the registry's base model,
valid registry fields), and only then renamed into place and registered,
under the library lock; a failure at any step leaves library and registry as
they were. A folder already in the library is registered where it is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from locomlx.adapters.format import WEIGHT_FILES, read_adapter, weights_file
from locomlx.adapters.gguf_lora import read_gguf_lora
from locomlx.data.checks import check_file
from locomlx.errors import LocomlxError
from locomlx.models.resolve import REPO_ID, resolve_model
from locomlx.provenance import file_sha256
from locomlx.registry.archive import ArchiveLimits, archive_stem, check_adapter_files, extract_archive
from locomlx.registry.compat import incompatibility, inspect_base
from locomlx.registry.history import apply_results
from locomlx.registry.schema import AdapterEntry, Registry, RouterHints, current_semester, version_key
from locomlx.registry.staging import claim_staging, remove_abandoned
from locomlx.registry.store import check_registry, library_lock, load_registry, save_registry
from locomlx.registry.validate import BENCHMARK, RESULTS
from locomlx.scoring.results import read_results

# What an adapter folder on the hub may contribute; pickled weights are never downloaded.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jsonl", "*.yaml", "*.yml", "*.md", "*.txt", "*.svg"]


@dataclass
class AdapterInfo:
    """What the person installing an adapter says about it (the registry fields not read from its files)."""

    domain: str
    name: str | None = None  # default: the folder, archive or repo name
    version: str = "1.0.0"
    semester: str | None = None  # default: the current semester
    description: str = ""
    authors: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    metric: str | None = None  # default: the metric of its eval/results.json
    benchmark: str | None = None  # a benchmark file for a source that carries none (hub repo, .gguf)


def _source_kind(source: str) -> str:
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        if path.name.lower().endswith(".gguf"):
            return "gguf"
        if archive_stem(path) is None:
            raise LocomlxError(f"'{source}' is a file but not an archive or a llama.cpp LoRA; give a .tar.gz, "
                               ".tgz, .zip or .gguf")
        return "archive"
    if REPO_ID.match(source) and not source.startswith((".", "/", "~")):
        return "hub"
    raise LocomlxError(f"'{source}' is not a folder, an archive (.tar.gz, .tgz, .zip) or a Hugging Face repo id "
                       "(owner/name); check the path")


def _default_name(source: str, kind: str) -> str:
    path = Path(source).expanduser()
    if kind == "archive":
        return archive_stem(path)
    if kind == "gguf":
        return path.name[: -len(".gguf")].removesuffix(".lora")
    return source.rsplit("/", 1)[-1] if kind == "hub" else path.resolve().name


def download_adapter(repo_id: str, dest: Path, revision: str | None = None) -> None:
    """Download the adapter files of a Hugging Face repo into `dest`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        snapshot_download(repo_id, revision=revision, local_dir=dest, allow_patterns=HUB_PATTERNS)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise LocomlxError(f"Hugging Face repo '{repo_id}' (revision {revision or 'main'}) does not exist or is "
                           "private; check the id") from exc
    except LocalEntryNotFoundError as exc:
        raise LocomlxError(f"Cannot download '{repo_id}': HF_HUB_OFFLINE is set or there is no network. "
                           "Download it once online, or install from a folder or archive.") from exc
    except Exception as exc:  # network errors come in many types
        raise LocomlxError(f"Could not download '{repo_id}' from the Hugging Face hub: {exc}") from exc
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # the hub client's bookkeeping, not the adapter's
    if not any((dest / name).is_file() for name in WEIGHT_FILES):
        raise LocomlxError(f"Hugging Face repo '{repo_id}' has no {WEIGHT_FILES[0]}; pickled weights (.bin, .pt) "
                           "are refused, ask its authors for safetensors")


def _adapter_root(content: Path, source: str) -> Path:
    """The adapter folder in unpacked content: the top, or its single folder."""
    if (content / "adapter_config.json").is_file():
        return content
    entries = list(content.iterdir())
    if len(entries) == 1 and (entries[0] / "adapter_config.json").is_file() and not entries[0].is_symlink():
        return entries[0]
    raise LocomlxError(f"{source} has no adapter_config.json at its top or in a single top folder; "
                       "it is not a LoRA adapter")


def _fetch(source: str, kind: str, staging: Path, revision: str | None, limits: ArchiveLimits,
           base_model: str) -> Path:
    content = staging / "content"
    if kind == "gguf":  # a llama.cpp LoRA: rewritten as an mlx-lm adapter folder for the base it was made for
        config = json.loads((resolve_model(base_model).path / "config.json").read_text())
        return read_gguf_lora(Path(source).expanduser(), config, content)
    if kind == "hub":
        download_adapter(source, content, revision)
    elif kind == "archive":
        content.mkdir()
        extract_archive(Path(source).expanduser(), content, limits)
    else:
        shutil.copytree(Path(source).expanduser(), content, symlinks=True)
    return _adapter_root(content, source)


def _check_benchmark(root: Path, source: str) -> None:
    """What `registry validate` will ask of the adapter's benchmark, asked before it is installed."""
    benchmark = root / BENCHMARK
    if not benchmark.is_file():
        raise LocomlxError(f"{source} has no {BENCHMARK.as_posix()}: every adapter in a library carries the "
                           "benchmark it is scored on (at least 50 rows; CONTRIBUTING.md step 4). Add it to the "
                           "adapter folder and install again; nothing was installed")
    errors = check_file(benchmark, "benchmark").errors
    if errors:
        shown = "; ".join(str(e).replace(str(root), source) for e in errors[:5])
        raise LocomlxError(f"{source}'s {BENCHMARK.as_posix()} has problems: {shown}; nothing was installed")


def _new_entry(name: str, info: AdapterInfo, source: str | None) -> AdapterEntry:
    return AdapterEntry(name=name, domain=info.domain, version=info.version, path=name, source=source,
                        description=info.description, authors=list(info.authors), tags=list(info.tags),
                        semester=info.semester or current_semester(), metric=info.metric,
                        router=RouterHints(list(info.keywords), info.description))


def _upgrades(registry: Registry, name: str, version: str) -> AdapterEntry | None:
    """The registered entry a higher `version` of `name` replaces (None when `name` is new); an error when the
    version is not higher."""
    current = registry.adapters.get(name)
    if current is None:
        return None
    if version_key(version) <= version_key(current.version):
        major, minor, _ = version_key(current.version)
        raise LocomlxError(f"An adapter named '{name}' is already registered at version {current.version}; to publish "
                           f"an improved one give a higher --version (e.g. {major}.{minor + 1}.0), or another --name")
    return current


def _check_free(registry: Registry, library: Path, name: str, in_place: bool, version: str) -> None:
    if _upgrades(registry, name, version) is not None:
        return
    if not in_place and (library / name).exists():
        raise LocomlxError(f"{library / name} already exists; pick another --name, or register that folder "
                           f"where it is: locomlx adapters install {library / name} --domain DOMAIN")


def install_adapter(source: str, library: Path, info: AdapterInfo, revision: str | None = None,
                    limits: ArchiveLimits = ArchiveLimits()) -> AdapterEntry:
    """Install and register an adapter from a hub repo id, a folder or an archive; returns its entry."""
    library = Path(library)
    registry = load_registry(library)
    if registry.base_model is None:
        raise LocomlxError(f"{library} has no registry.yaml with a base model; create one first: "
                           f"locomlx registry init --adapters-dir {library} --quantization Q4_1")
    kind = _source_kind(source)
    name = info.name or _default_name(source, kind)
    hub_source = (f"{source}@{revision}" if revision else source) if kind == "hub" else None
    entry = _new_entry(name, info, hub_source)
    problems = check_registry(Registry(registry.base_model, {name: entry}), str(library / "registry.yaml"))
    if problems:
        raise LocomlxError("; ".join(f"{p.field}: {p.message}" for p in problems))
    in_library = kind == "folder" and Path(source).expanduser().resolve().parent == library.resolve()
    upgrading = _upgrades(registry, name, info.version) is not None
    in_place = in_library and not upgrading  # a new version in a folder of the library moves into NAME/
    if in_place and name != Path(source).resolve().name:
        raise LocomlxError(f"{source} is already in the library, so its name is its folder name "
                           f"'{Path(source).resolve().name}', not '{name}'; rename the folder or drop --name")
    _check_free(registry, library, name, in_place, info.version)

    remove_abandoned(library)
    if kind == "folder":
        check_adapter_files(Path(source).expanduser(), source)  # before copying: a FIFO would hang the copy
    staging, owner = (None, None) if in_place else claim_staging(library)
    try:
        root = Path(source).expanduser() if in_place else _fetch(source, kind, staging, revision, limits,
                                                                         registry.base_model.id)
        if info.benchmark and not in_place and not (root / BENCHMARK).is_file():
            if not Path(info.benchmark).is_file():
                raise LocomlxError(f"--benchmark {info.benchmark} does not exist")
            (root / BENCHMARK).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(info.benchmark, root / BENCHMARK)
        try:
            check_adapter_files(root, source)
            adapter = read_adapter(root, name)
        except LocomlxError as exc:  # name what the user gave, not the staging folder
            raise LocomlxError(str(exc).replace(str(root), source) + "; nothing was installed") from None
        reason = incompatibility(adapter, inspect_base(registry.base_model.id))
        if reason:
            raise LocomlxError(f"{source} does not fit the registry's base model: {reason}; nothing was installed")
        _check_benchmark(root, source)
        entry.sha256 = file_sha256(weights_file(root))
        entry.benchmark = f"{name}/{BENCHMARK.as_posix()}"
        results = read_results(root / RESULTS) if (root / RESULTS).is_file() else None
        _register(library, entry, root, in_place, results)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            os.close(owner)
    if upgrading and in_library:
        shutil.rmtree(Path(source).expanduser())  # now installed as library/NAME
    return entry


def _register(library: Path, entry: AdapterEntry, root: Path, in_place: bool, results: dict | None) -> None:
    """Move the checked folder into place and register it, as one step under the lock."""
    with library_lock(library):
        registry = load_registry(library)
        _check_free(registry, library, entry.name, in_place, entry.version)
        previous = _upgrades(registry, entry.name, entry.version)
        target = library / entry.name
        old = None
        if previous is not None and target.exists():
            _keep_previous_results(target, root, previous.version)
            old = Path(tempfile.mkdtemp(prefix=f".previous-{entry.name}-", dir=library)) / entry.name
            os.rename(target, old)
        if not in_place:
            os.rename(root, target)
        try:
            if previous is not None:
                entry.active = previous.active and bool(results and results["passed"])
            registry.adapters[entry.name] = entry
            if results is not None:
                apply_results(registry, entry.name, results)
            save_registry(library, registry)
        except BaseException:
            if not in_place:
                os.rename(target, root)
            if old is not None:
                os.rename(old, target)
            raise
    if old is not None:
        shutil.rmtree(old.parent)


def _keep_previous_results(current: Path, new: Path, version: str) -> None:
    """Copy the replaced version's eval/results.json (and the ones it kept) into the new version's folder."""
    for results in [current / RESULTS, *sorted((current / "eval" / "previous").glob("*/results.json"))]:
        if results.is_file():
            kept = results.parent.name if results.parent.parent.name == "previous" else version
            destination = new / "eval" / "previous" / kept / "results.json"
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results, destination)


def remove_adapter(library: Path, name: str, keep_files: bool = False) -> AdapterEntry:
    """Unregister `name` and delete its folder (kept with `keep_files`); its history stays."""
    library = Path(library)
    trash = None
    with library_lock(library):
        registry = load_registry(library)
        entry = registry.adapters.pop(registry.entry(name).name)
        folder = library / entry.path if entry.installed else None
        if folder is not None and folder.exists() and not keep_files:
            trash = Path(tempfile.mkdtemp(prefix=f".remove-{name}-", dir=library))
            os.rename(folder, trash / name)
        try:
            save_registry(library, registry)
        except BaseException:
            if trash is not None:
                os.rename(trash / name, folder)
                trash.rmdir()
            raise
    if trash is not None:
        shutil.rmtree(trash)
    return entry
