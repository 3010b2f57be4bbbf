"""Small C++ MLX primitives for a CPU, where MLX's own kernels leave the cores idle.

- `qgemv.cpp`: a matrix-vector product on MLX's packed 4- and 8-bit weights, for decoding. A decode step in
  float32 reads every weight (~540 MB for SmolLM2-135M), so memory bandwidth sets its speed; the 4-bit
  weights are eight times fewer bytes, but MLX's CPU `quantized_matmul` runs on one thread with scalar code.
- `attention.cpp`: attention in one pass per query row, masked keys skipped, for prompts and batched decode
  steps (queries, keys and values read where they lie, as a KV cache's view of its buffer). MLX computes it as
  four full passes over the score matrix, with a scalar exp per element.
- `swiglu.cpp`: the MLP's SiLU gating and its gradient, one pass each (MLX's backward takes four, on one
  thread), for prompts, batches and training steps.
- `softmax.cpp`: a training step's attention softmax, causal mask included, and its gradient, one pass each
  (a training step keeps the unfused attention, whose weights its backward reuses).
- `rope.cpp`, `rmsnorm.cpp`: the rotary embedding of queries and keys and the blocks' RMS normalisation (and
  its gradient), for prompts, batches and training (MLX computes them on one thread, the rope's cosines and
  sines per element).
- `logsumexp.cpp`: log(sum(exp(x))) over rows, which mlx-lm's generators take over the whole vocabulary at every
  step to normalise the logits, and a training step's cross-entropy over its answer tokens.

All split their rows over one thread pool (`pool.h`). `python -m locomlx.models.kernels.build` compiles
them against the installed MLX (scripts/setup.sh does). Without them locomlx decodes on float32 weights and
prefills with MLX's ops: correct, slower.
"""

from __future__ import annotations

import importlib
import os

DISABLE_VAR = "LOCOMLX_KERNELS"  # "0" turns the kernels off (MLX's own ops, for comparisons)


def load_kernel():
    """The compiled `_kernels` module, or None where it is not built or is turned off."""
    if os.environ.get(DISABLE_VAR, "").strip() == "0":
        return None
    try:
        return importlib.import_module("locomlx.models.kernels._kernels")
    except ImportError:
        return None
