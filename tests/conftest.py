"""Shared fixtures: a tiny locally-built llama model, its adapters, and the real embedded model."""

import os

import locomlx  # first: preloads the fast CBLAS before anything imports mlx.core

import pytest

from tests import tiny

locomlx.keep_freed_memory()  # the test process computes like the `locomlx` command does (locomlx/heap.py)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Converted models go to a per-run cache (the real model converts in a few seconds) and the hub is off."""
    os.environ.setdefault("LOCOMLX_CACHE", str(tmp_path_factory.mktemp("cache")))
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return tiny.build_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model_4bit(tmp_path_factory):
    return tiny.build_model(tmp_path_factory.mktemp("tiny4") / "model", quantize_bits=4)


@pytest.fixture(scope="session")
def real_model():
    """The embedded SmolLM2-135M; CI installs its wheel, so a missing wheel fails there instead of skipping."""
    from locomlx.errors import LocomlxError
    from locomlx.models.resolve import builtin_gguf_path

    try:
        builtin_gguf_path("smollm2-135m")
    except LocomlxError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    return "smollm2-135m"


@pytest.fixture(scope="session")
def real_engine(real_model):
    from locomlx.engine.engine import Engine

    return Engine.load(real_model)
