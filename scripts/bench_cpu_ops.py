#!/usr/bin/env python3
"""Why prefill and training trail torch on a CPU: MLX's elementwise kernels against numpy's and locomlx's.

Prints nanoseconds per element for exp, sigmoid, softmax, SiLU gating, rotary embedding and RMS norm in MLX
(CPU), the same in locomlx's CPU kernels (locomlx/models/cpu_kernels.py and, where built, the C++ kernels of
locomlx/models/kernels), and exp in numpy, plus a float32 matmul's GFLOP/s for scale, on 2.4M float32
elements (an attention score matrix of 9 heads x 512 x 512; for rope 72 heads x 512 positions x 64, for the
norm 4096 rows of 576).

    python scripts/bench_cpu_ops.py
"""

import time

import locomlx  # first: the CBLAS preload, as in every locomlx process
from locomlx.models import cpu_kernels

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.activations import swiglu

N = 9 * 512 * 512
REPEATS = 10


def per_element_ns(fn, arg) -> float:
    fn(arg)
    start = time.perf_counter()
    for _ in range(REPEATS):
        fn(arg)
    return (time.perf_counter() - start) / REPEATS / N * 1e9


def main() -> None:
    locomlx.keep_freed_memory()  # this script owns its process, as `locomlx` does (locomlx/heap.py)
    x = mx.random.normal((N,))
    mx.eval(x)
    x_np = np.array(x)
    rows = {
        "mlx exp": per_element_ns(lambda a: mx.eval(mx.exp(a)), x),
        "mlx sigmoid": per_element_ns(lambda a: mx.eval(mx.sigmoid(a)), x),
        "mlx softmax (rows of 512)": per_element_ns(lambda a: mx.eval(mx.softmax(a.reshape(-1, 512), axis=-1)), x),
        "mlx-lm swiglu": per_element_ns(lambda a: mx.eval(swiglu(a, a)), x),
        "mlx multiply-add": per_element_ns(lambda a: mx.eval(a * 2 + 1), x),
        "locomlx exp (one stream)": per_element_ns(lambda a: mx.eval(cpu_kernels._exp(a)), x),
        "locomlx softmax (rows of 512)": per_element_ns(lambda a: mx.eval(cpu_kernels.softmax(a.reshape(-1, 512))), x),
        "locomlx swiglu": per_element_ns(
            lambda a: mx.eval(cpu_kernels.swiglu(a.reshape(-1, 512), a.reshape(-1, 512))), x),
        "numpy exp": per_element_ns(np.exp, x_np),
    }
    rope, norm = nn.RoPE(64, base=100000.0), nn.RMSNorm(576)
    heads, rows_of_576 = x.reshape(1, 72, 512, 64), x.reshape(4096, 576)
    rows["mlx rope (512 positions)"] = per_element_ns(lambda a: mx.eval(rope(a)), heads)
    rows["mlx rms_norm (rows of 576)"] = per_element_ns(lambda a: mx.eval(norm(a)), rows_of_576)
    if cpu_kernels._rope_kernel() is not None:
        rope.__class__, norm.__class__ = cpu_kernels.KernelRoPE, cpu_kernels.KernelRMSNorm
        rows["locomlx rope (512 positions)"] = per_element_ns(lambda a: mx.eval(rope(a)), heads)
        rows["locomlx rms_norm (rows of 576)"] = per_element_ns(lambda a: mx.eval(norm(a)), rows_of_576)
    vocabulary_rows = x[: (N // 49152) * 49152].reshape(-1, 49152)  # a batch's logits, as mlx-lm normalises them
    rows["mlx logsumexp (rows of 49152)"] = per_element_ns(
        lambda a: mx.eval(mx.logsumexp(a, axis=-1, keepdims=True)), vocabulary_rows)
    if cpu_kernels._logsumexp_kernel() is not None:
        rows["locomlx logsumexp (rows of 49152)"] = per_element_ns(
            lambda a: mx.eval(cpu_kernels.logsumexp(a, axis=-1, keepdims=True)), vocabulary_rows)
    for name, ns in rows.items():
        print(f"{name:30s} {ns:6.2f} ns/element")
    print(f"mlx exp / numpy exp: {rows['mlx exp'] / rows['numpy exp']:.1f}x slower")
    grid = np.linspace(cpu_kernels.EXP_MIN, cpu_kernels.EXP_MAX, 200_001).astype(np.float32)
    exact = np.exp(grid.astype(np.float64))
    for name, fn in (("mlx exp", mx.exp), ("locomlx exp", cpu_kernels._exp)):
        error = np.max(np.abs(np.array(fn(mx.array(grid))).astype(np.float64) - exact) / exact)
        print(f"{name} max relative error on [{cpu_kernels.EXP_MIN:g}, {cpu_kernels.EXP_MAX:g}]: {error:.1e}")
    faster = {"softmax": ("mlx softmax (rows of 512)", "locomlx softmax (rows of 512)"),
              "swiglu": ("mlx-lm swiglu", "locomlx swiglu"),
              "rope": ("mlx rope (512 positions)", "locomlx rope (512 positions)"),
              "rms_norm": ("mlx rms_norm (rows of 576)", "locomlx rms_norm (rows of 576)"),
              "logsumexp": ("mlx logsumexp (rows of 49152)", "locomlx logsumexp (rows of 49152)")}
    print("locomlx / mlx: " + ", ".join(f"{op} {rows[mlx] / rows[ours]:.1f}x faster"
                                        for op, (mlx, ours) in faster.items() if ours in rows))
    a = mx.random.normal((512, 576))
    w = mx.random.normal((1536, 576))
    mx.eval(a, w)
    mx.eval(a @ w.T)
    start = time.perf_counter()
    for _ in range(REPEATS):
        mx.eval(a @ w.T)
    seconds = (time.perf_counter() - start) / REPEATS
    print(f"mlx float32 matmul 512x576 @ 576x1536: {2 * 512 * 576 * 1536 / seconds / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
