"""Facts recorded beside every trained adapter and every result, so a number can be traced and rerun."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path

from locomlx import blas
from locomlx._version import __version__

import mlx.core as mx


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def hardware() -> str:
    """Machine, CPU count, MLX device and the BLAS in use."""
    lib = blas.preload().path
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, MLX device {mx.default_device()}, "
            f"BLAS {Path(lib).name if lib else 'bundled'}")


def versions() -> dict[str, str]:
    return {"locomlx": __version__, "mlx": importlib.metadata.version("mlx"),
            "mlx-lm": importlib.metadata.version("mlx-lm"), "python": platform.python_version()}
