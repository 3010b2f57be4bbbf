#!/usr/bin/env python3
"""Why prefill and training trail torch on a CPU: MLX's transcendental kernels against numpy's.

Prints nanoseconds per element for exp, sigmoid and softmax in MLX (CPU) and exp in numpy, and
a float32 matmul's GFLOP/s for scale, on 2.4M float32 elements (an attention score matrix of
9 heads x 512 x 512).

    python scripts/bench_cpu_ops.py
"""

import time

import locomlx  # noqa: F401  (CBLAS preload, as in every locomlx process)
import mlx.core as mx
import numpy as np

N = 9 * 512 * 512
REPEATS = 10


def per_element_ns(fn, arg) -> float:
    fn(arg)
    start = time.perf_counter()
    for _ in range(REPEATS):
        fn(arg)
    return (time.perf_counter() - start) / REPEATS / N * 1e9


def main() -> None:
    x = mx.random.normal((N,))
    mx.eval(x)
    x_np = np.array(x)
    rows = {
        "mlx exp": per_element_ns(lambda a: mx.eval(mx.exp(a)), x),
        "mlx sigmoid": per_element_ns(lambda a: mx.eval(mx.sigmoid(a)), x),
        "mlx softmax (rows of 512)": per_element_ns(lambda a: mx.eval(mx.softmax(a.reshape(-1, 512), axis=-1)), x),
        "mlx multiply-add": per_element_ns(lambda a: mx.eval(a * 2 + 1), x),
        "numpy exp": per_element_ns(np.exp, x_np),
    }
    for name, ns in rows.items():
        print(f"{name:28s} {ns:6.2f} ns/element")
    print(f"mlx exp / numpy exp: {rows['mlx exp'] / rows['numpy exp']:.1f}x slower")
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
