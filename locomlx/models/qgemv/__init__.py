"""A multi-threaded matrix-vector product on MLX's packed 4- and 8-bit weights, for decoding on a CPU.

A decode step in float32 reads every weight of the model (~540 MB for SmolLM2-135M), so memory bandwidth
sets its speed. The 4-bit weights are eight times fewer bytes, but MLX's CPU `quantized_matmul` runs on one
thread with scalar code and loses to float32 with MKL. `qgemv.cpp` is a small C++ MLX primitive that reads
the packed weights on every core; `python -m locomlx.models.qgemv.build` compiles it against the installed
MLX (scripts/setup.sh does). Without it locomlx decodes on float32 weights: correct, slower.
"""

from __future__ import annotations

import importlib
import os

DISABLE_VAR = "LOCOMLX_QGEMV"  # "0" turns the kernel off (the float32 path, for comparisons)


def load_kernel():
    """The compiled `_qgemv` module, or None where it is not built or is turned off."""
    if os.environ.get(DISABLE_VAR, "").strip() == "0":
        return None
    try:
        return importlib.import_module("locomlx.models.qgemv._qgemv")
    except ImportError:
        return None
