"""Shared by the registry tests: a library on the tiny model, adapters with data and results, snapshots.

(No tests here; the test_registry_* modules import these.)
"""

import json
import os
from pathlib import Path

from locomlx.provenance import file_sha256
from locomlx.registry.install import AdapterInfo, install_adapter
from locomlx.registry.refresh import init_registry
from locomlx.scoring.bar import within_ood_bar

import pytest

from tests import tiny


def fake_results(name: str, benchmark: Path, adapter_score=0.8, base_model_score=0.5, p_value=0.001,
                 ood_degradation=0.01, metric="exact_match") -> dict:
    """A valid eval/results.json record (see locomlx/eval/results.py) with the given scores."""
    improvement = adapter_score - base_model_score
    return {
        "adapter": name, "base_model": "tiny", "quantization": "none", "benchmark": str(benchmark),
        "benchmark_sha256": file_sha256(benchmark), "n_examples": 50, "metric": metric,
        "adapter_score": adapter_score, "base_model_score": base_model_score, "improvement": improvement,
        "relative_improvement": improvement / base_model_score if base_model_score else None,
        "adapter_ci95": [adapter_score - 0.1, adapter_score + 0.1],
        "base_model_ci95": [base_model_score - 0.1, base_model_score + 0.1],
        "p_value": p_value, "significant": p_value < 0.05 and improvement > 0, "ood": [],
        "ood_degradation": ood_degradation,
        "passed": p_value < 0.05 and improvement > 0 and within_ood_bar(ood_degradation),
        "judge_sd": None, "inference": {"max_tokens": 8}, "hardware": "test", "locomlx_version": "0.1.0",
        "duration_seconds": 1.0, "timestamp": "2026-11-22T10:00:00+00:00",
    }


def write_adapter(folder: Path, model: Path, seed: int = 1, n_train: int = 500, n_bench: int = 50,
                  results: dict | None = None, **scores) -> Path:
    """A complete adapter folder: weights (+ mlx-lm's link), training set, benchmark and eval/results.json.

    The examples use templates of their own per seed, so no two adapters' data overlap.
    """
    tiny.make_adapter(folder, model, rank=4, seed=seed)
    (folder / "adapters.safetensors").symlink_to("adapter_model.safetensors")
    templates = (f"Review {seed}: the {{n}} was {{a}}.", f"Review {seed}: what a {{a}} {{n}}!")
    rows = tiny.sentiment_examples(n_train + n_bench, seed, templates=templates)
    tiny.write_jsonl(folder / "training" / "dataset.jsonl", rows[:n_train])
    benchmark = tiny.write_jsonl(folder / "eval" / "benchmark.jsonl", rows[n_train:])
    if results is None:
        results = fake_results(folder.name, benchmark, **scores)
    (folder / "eval" / "results.json").write_text(json.dumps(results))
    return folder


def new_library(root: Path, model: Path) -> Path:
    library = root / "adapters"
    init_registry(library, str(model), "none", "2026-27")
    return library


def add_adapter(library: Path, model: Path, name: str, domain: str = "sentiment", seed: int = 1,
                semester: str = "2026-fall", keywords=("review",), **scores) -> Path:
    """Write an adapter into the library and register it where it is."""
    folder = write_adapter(library / name, model, seed=seed, **scores)
    install_adapter(str(folder), library, AdapterInfo(domain, semester=semester, keywords=list(keywords),
                                                      description=f"{name} for tests"))
    return folder


def snapshot(root: Path) -> dict[str, object]:
    """Every file, folder and link under `root` (hidden ones too): what "nothing changed" compares."""
    state = {}
    for folder, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            state[key] = ("link", os.readlink(path)) if path.is_symlink() else \
                ("dir",) if path.is_dir() else ("file", path.read_bytes())
    return state


@pytest.fixture()
def library(tmp_path, tiny_model) -> Path:
    """A library with a registry for the tiny model and no adapters."""
    return new_library(tmp_path, tiny_model)
