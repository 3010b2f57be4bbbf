"""Faster CPU math for MLX's float32 models: SiLU gating, attention, rotary embedding, RMS normalisation and the
logits' logsumexp.

On the CPU, MLX evaluates exp, sigmoid and softmax with scalar calls on one thread, while matmuls
run in the multi-threaded BLAS, so in a SmolLM2-135M prefill on 2 cores the SiLU gating and the
attention softmax took longer than all of a layer's matmuls (`scripts/bench_cpu_ops.py` shows the
per-element costs).

Two changes, both exact to float32 rounding (tests/test_cpu_kernels.py), for where the C++ kernels
(locomlx/models/kernels: the SiLU gating and the prompt attention in one pass each) are not built:
- exp is a range reduction (x = n ln2 + r) and a degree-7 polynomial (Cephes' expf) built from
  arithmetic ops, which MLX's compiled kernels vectorise; the 2^n factor is written into the float's
  exponent bits. Faster than MLX's CPU exp, and more accurate (max relative error 8e-8 vs 4e-6).
- Large elementwise work is split by rows over one CPU stream per core: MLX runs each stream on its
  own thread, so the cores that BLAS uses for matmuls also share the elementwise work.

Where the C++ kernels are built they also take the rotary embedding and the RMS normalisation, which MLX
computes on one thread (the rope's cosines and sines once per element): 2.3 ms and 1 ms a layer of a
512-token prefill, against 0.1 ms each in the kernels; and the logsumexp over the vocabulary with which mlx-lm's
generators normalise every step's logits and a training step's cross-entropy starts (`install_in_generation`).

`install()` puts these into a loaded mlx-lm model's module (e.g. `mlx_lm.models.llama`) and layers for
float32 models on the CPU; Metal and CUDA keep MLX's own kernels. Gradients are defined (custom vjp), so
LoRA training uses them too.
"""

from __future__ import annotations

import os
import sys
import types
from contextlib import contextmanager
from functools import lru_cache

from locomlx.models.anatomy import blocks_module
from locomlx.models.kernels import load_kernel

import mlx.core as mx
import mlx.nn as nn

_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 0.693145751953125, 1.428606765330187e-06  # ln 2 split so n * _LN2_HI is exact
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_ROUND = 12582912.0  # 1.5 * 2^23: adding and subtracting it rounds a float32 to an integer
EXP_MIN, EXP_MAX = -60.0, 80.0
MASKED = -1e9  # score of a masked key: its weight is e^EXP_MIN / sum ~ 0, and a fully masked row stays finite
PARALLEL_MIN_ELEMENTS = 1 << 16  # below this, splitting costs more than it saves
# From here (a batched decode step of three rows up) the C++ gating beats mlx-lm's compiled one, which took 11 ms of
# a 16-row step's forward against the kernel's 2 to 3 (docs/cpu.md, item 9); a one-row step keeps mlx-lm's, fused.
KERNEL_MIN_ELEMENTS = 1 << 12
FUSED_HEAD_DIMS = (64, 128, 256)  # head sizes the fused attention kernel is compiled for


@mx.compile
def _exp(x: mx.array) -> mx.array:
    """exp(x) for x in [EXP_MIN, EXP_MAX], clamped outside. Every use below (softmax weights after
    subtracting the row's maximum, sigmoid) changes by less than e^EXP_MIN ~ 1e-26 from the clamp, and
    results stay normal floats: products with subnormals are ~100x slower on x86. Rounding with the
    1.5 * 2^23 trick instead of `floor`, and no `where`, keeps MLX's compiled loop vectorised."""
    x = mx.clip(x, EXP_MIN, EXP_MAX)
    n = (x * _LOG2E + _ROUND) - _ROUND  # round to the nearest integer
    r = x - n * _LN2_HI - n * _LN2_LO
    p = _EXP_POLY[0]
    for c in _EXP_POLY[1:]:
        p = p * r + c
    p = p * r * r + r + 1.0
    return p * mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)  # p * 2^n


@mx.compile
def _sigmoid(x: mx.array) -> mx.array:
    return 1.0 / (1.0 + _exp(-x))


@mx.compile
def _swiglu_forward(gate: mx.array, up: mx.array) -> mx.array:
    return gate * _sigmoid(gate) * up


@mx.compile
def _swiglu_backward(gate: mx.array, up: mx.array, cotangent: mx.array) -> tuple[mx.array, mx.array]:
    s = _sigmoid(gate)
    silu = gate * s
    return cotangent * up * (s + silu * (1.0 - s)), cotangent * silu


def _softmax_forward(x: mx.array) -> mx.array:
    e = _exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_backward(y: mx.array, cotangent: mx.array) -> mx.array:
    return y * (cotangent - (cotangent * y).sum(axis=-1, keepdims=True))


@lru_cache(maxsize=None)
def _streams() -> tuple[mx.Stream, ...]:
    return tuple(mx.new_stream(mx.cpu) for _ in range(min(os.cpu_count() or 1, 8)))


def across_cores(kernel, *arrays: mx.array):
    """`kernel(*arrays)` for row-wise kernels (every output row depends on the same input rows only),
    computed in row blocks on one CPU stream per core. Returns what `kernel` returns (array or tuple)."""
    shape = arrays[0].shape
    streams = _streams()
    rows = arrays[0].size // shape[-1] if shape else 1
    if (len(streams) < 2 or arrays[0].size < PARALLEL_MIN_ELEMENTS or rows < len(streams)
            or any(a.shape != shape for a in arrays)):
        return kernel(*arrays)
    flat = [a.reshape(rows, shape[-1]) for a in arrays]
    bounds = [rows * i // len(streams) for i in range(len(streams) + 1)]
    parts = []
    for stream, start, stop in zip(streams, bounds, bounds[1:]):
        with mx.stream(stream):
            parts.append(kernel(*[a[start:stop] for a in flat]))
    if isinstance(parts[0], tuple):
        return tuple(mx.concatenate(p).reshape(shape) for p in zip(*parts))
    return mx.concatenate(parts).reshape(shape)


@mx.custom_function
def _swiglu_ops(gate: mx.array, up: mx.array) -> mx.array:
    return across_cores(_swiglu_forward, gate, up)


@_swiglu_ops.vjp
def _swiglu_vjp(primals, cotangent, output):
    return across_cores(_swiglu_backward, *primals, cotangent)


def _kernels_with(name: str):
    """The compiled kernels (locomlx/models/kernels) where they are built and hold `name`, else None: a build
    older than the kernel lacks it (scripts/setup.sh rebuilds then)."""
    kernels = load_kernel()
    return kernels if kernels is not None and hasattr(kernels, name) else None


@lru_cache(maxsize=None)
def _swiglu_kernel():
    """The compiled SiLU gating (locomlx/models/kernels/swiglu.cpp: one pass forward, one backward, on the
    kernels' threads), or None where it is not built (or was built before it existed)."""
    return _kernels_with("swiglu")


def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    """silu(gate) * up, as mlx-lm's `swiglu`, with its gradient: the C++ kernel where it is built, else MLX
    ops split over the cores."""
    kernel = _swiglu_kernel()
    return kernel.swiglu(gate, up) if kernel is not None else _swiglu_ops(gate, up)


@mx.custom_function
def softmax(x: mx.array) -> mx.array:
    """Softmax over the last axis."""
    return across_cores(_softmax_forward, x)


@softmax.vjp
def _softmax_vjp(primals, cotangent, output):
    return (across_cores(_softmax_backward, output, cotangent),)


def _masked(scores: mx.array, mask, n_queries: int, n_keys: int) -> mx.array:
    if mask is None:
        return scores
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"unknown attention mask '{mask}'")
        # The queries are the last n_queries positions of the n_keys in the cache.
        allowed = mx.arange(n_keys)[None, :] <= (mx.arange(n_queries) + n_keys - n_queries)[:, None]
        return mx.where(allowed, scores, MASKED)
    if mask.dtype == mx.bool_:
        return mx.where(mask, scores, MASKED)
    return scores + mask


_unfused_blocks = 0  # how many `unfused_attention` blocks are open


@contextmanager
def unfused_attention():
    """Attention traced inside this block is the unfused one. A training step keeps the unfused forward's
    scores and weights for its backward pass, so a fused forward there would be computed for nothing."""
    global _unfused_blocks
    _unfused_blocks += 1
    try:
        yield
    finally:
        _unfused_blocks -= 1


@lru_cache(maxsize=None)
def _attention_kernel():
    """The compiled fused attention (locomlx/models/kernels/attention.cpp), or None where it is not built
    (or was built before it existed: scripts/setup.sh rebuilds then)."""
    return _kernels_with("attention")


@lru_cache(maxsize=None)
def _softmax_kernel():
    """The compiled attention softmax with its causal mask (locomlx/models/kernels/softmax.cpp: one pass
    forward, one backward), or None where it is not built (or was built before it existed)."""
    return _kernels_with("softmax")


def _unfused_attention(queries, keys, values, scale: float, mask) -> mx.array:
    batch, heads, n_queries, dim = queries.shape
    kv_heads, n_keys = keys.shape[1], keys.shape[2]
    group = heads // kv_heads  # grouped-query attention: `group` query heads share one key/value head
    q = (queries * scale).reshape(batch, kv_heads, group * n_queries, dim)
    scores = (q @ keys.swapaxes(-1, -2)).reshape(batch, heads, n_queries, n_keys)
    kernel = _softmax_kernel()
    causal_or_none = mask is None or (isinstance(mask, str) and mask == "causal")
    if kernel is not None and causal_or_none:
        weights = kernel.softmax(scores, mask is not None)
    else:
        weights = softmax(_masked(scores, mask, n_queries, n_keys))
    out = weights.reshape(batch, kv_heads, group * n_queries, n_keys) @ values
    return out.reshape(batch, heads, n_queries, dim)


@mx.custom_function
def _fused_attention(queries, keys, values, scale: float, causal: bool, mask):
    return _attention_kernel().attention(queries, keys, values, scale, causal, mask)


@_fused_attention.vjp
def _fused_attention_vjp(primals, cotangent, output):
    """The unfused attention's gradient, recomputed (training steps use `unfused_attention` instead)."""
    queries, keys, values, scale, causal, mask = primals
    _, grads = mx.vjp(lambda q, k, v: _unfused_attention(q, k, v, scale, "causal" if causal else mask),
                      [queries, keys, values], [cotangent])
    return tuple(grads)


def _fused_mask(mask, n_queries: int, n_keys: int) -> tuple[bool, mx.array | None] | None:
    """The mask as the fused kernel takes it, (causal, boolean (B or 1, 1, L, S) array or None), or None
    for masks it does not take (additive ones)."""
    if mask is None or isinstance(mask, str):
        return (mask == "causal", None) if mask in (None, "causal") else None
    if mask.dtype != mx.bool_ or mask.ndim not in (2, 4) or (mask.ndim == 4 and mask.shape[1] != 1):
        return None
    full = mask if mask.ndim == 4 else mask[None, None]
    return False, mx.broadcast_to(full, (full.shape[0], 1, n_queries, n_keys))


@lru_cache(maxsize=None)
def _rope_kernel():
    """The compiled rotary embedding (locomlx/models/kernels/rope.cpp), or None where it is not built."""
    return _kernels_with("rope")


@lru_cache(maxsize=None)
def _rms_norm_kernel():
    """The compiled RMS normalisation and its gradient (locomlx/models/kernels/rmsnorm.cpp), or None where they are
    not built."""
    return _kernels_with("rms_norm_grad")


@mx.custom_function
def _rope(x, offsets, dims: int, traditional: bool, base: float, scale: float):
    return _rope_kernel().rope(x, dims, traditional, base, scale, offsets)


@_rope.vjp
def _rope_vjp(primals, cotangent, output):
    """A rotation's transpose is the rotation by the opposite angles: the kernel with the positions negated."""
    x, offsets, dims, traditional, base, scale = primals
    return (_rope_kernel().rope(cotangent, dims, traditional, base, -scale, offsets),)


@mx.custom_function
def _rms_norm(x, weight, eps: float):
    return _rms_norm_kernel().rms_norm(x, weight, eps)


@_rms_norm.vjp
def _rms_norm_vjp(primals, cotangent, output):
    """The kernel's gradients of x and the weight (from x, the weight and the cotangent)."""
    x, weight, eps = primals
    return tuple(_rms_norm_kernel().rms_norm_grad(x, weight, cotangent, eps))


@lru_cache(maxsize=None)
def _logsumexp_kernel():
    """The compiled logsumexp (locomlx/models/kernels/logsumexp.cpp), or None where it is not built."""
    return _kernels_with("logsumexp")


@mx.custom_function
def _last_axis_logsumexp(x):
    return _logsumexp_kernel().logsumexp(x)


@_last_axis_logsumexp.vjp
def _last_axis_logsumexp_vjp(primals, cotangent, output):
    """The gradient of log(sum(exp(x))) is softmax(x), by the softmax kernel where it is built. (MLX hands a function
    of one argument its primal as is.)"""
    kernel = _softmax_kernel()
    weights = (kernel.softmax(primals, False) if kernel is not None and primals.ndim >= 2
               else mx.exp(primals - output[..., None]))
    return (cotangent[..., None] * weights,)


def logsumexp(a: mx.array, axis=None, keepdims: bool = False, *, stream=None) -> mx.array:
    """`mx.logsumexp`, by the kernel for a float32 array of KERNEL_MIN_ELEMENTS up on the CPU reduced over its last
    axis (or over all of it when only the last axis is longer than 1, as mlx-lm's one-row generation asks)."""
    last = a.ndim - 1
    over_last = axis in (-1, last, (-1,), (last,)) or (axis is None and a.size == (a.shape[-1] if a.ndim else 1))
    if (stream is not None or not over_last or a.ndim == 0 or a.dtype != mx.float32 or a.size < KERNEL_MIN_ELEMENTS
            or mx.default_device() != mx.cpu or _logsumexp_kernel() is None):
        return mx.logsumexp(a, axis=axis, keepdims=keepdims, stream=stream)
    out = _last_axis_logsumexp(a)
    if not keepdims:
        return out if axis is not None else out.reshape(())
    return out[..., None] if axis is not None else out.reshape((1,) * a.ndim)


def cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """`nn.losses.cross_entropy(logits, targets)` for class-index targets over the last axis, with the logsumexp and
    its gradient by the kernels: MLX's scalar exp made a training step's loss over the 49k vocabulary take about
    200 ms of a 5.2 s step, forward and backward (docs/cpu-profile.md)."""
    return logsumexp(logits, axis=-1) - mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)


class _CoreWithKernelLogsumexp(types.ModuleType):
    """`mlx.core` as mlx-lm's generation module sees it once `install_in_generation` ran: every name is MLX's,
    but `logsumexp` is the one above."""

    logsumexp = staticmethod(logsumexp)

    def __getattr__(self, name):
        return getattr(mx, name)


def install_in_generation() -> bool:
    """Normalise mlx-lm's generation steps' logits with the kernel: its `BatchGenerator` (which `locomlx eval`,
    batches and `locomlx serve` run on) takes every step's log-probabilities as logits - logsumexp(logits) over the
    whole vocabulary, and MLX's logsumexp took 10 ms of a 16-row step whose forward takes ~118 ms on a 2-core CPU.
    Replaces the `mx` name of `mlx_lm.generate` by a view of mlx.core whose `logsumexp` is the kernel's (which
    falls back to MLX's for anything else); returns whether the kernel is in use there."""
    import mlx_lm.generate  # noqa: F401  (the module, which `mlx_lm.generate` the attribute hides)

    module = sys.modules["mlx_lm.generate"]
    if isinstance(module.mx, _CoreWithKernelLogsumexp):
        return True
    if module.mx is not mx or _logsumexp_kernel() is None:
        return False
    module.mx = _CoreWithKernelLogsumexp("mlx.core")
    return True


class KernelRoPE(nn.RoPE):
    """nn.RoPE by the rope kernel for float32 (B, H, L, D) inputs of KERNEL_MIN_ELEMENTS up (a prompt, a batched
    decode step); a one-row decode step keeps mx.fast.rope, as cheap there without a call into the kernel."""

    def __call__(self, x, offset=0):
        if x.dtype == mx.float32 and x.ndim == 4 and x.size >= KERNEL_MIN_ELEMENTS and _rope_kernel() is not None:
            offsets = offset if isinstance(offset, mx.array) else mx.array(offset, mx.int32)
            return _rope(x, offsets, self.dims, self.traditional, self.base, self.scale)
        return super().__call__(x, offset)


class KernelRMSNorm(nn.RMSNorm):
    """nn.RMSNorm by the rms_norm kernel for float32 inputs of KERNEL_MIN_ELEMENTS up."""

    def __call__(self, x):
        weight = self["weight"]
        if (x.dtype == weight.dtype == mx.float32 and x.size >= KERNEL_MIN_ELEMENTS
                and _rms_norm_kernel() is not None):
            return _rms_norm(x, weight, self.eps)
        return super().__call__(x)


def _install_layers(model) -> bool:
    """Make `model`'s plain nn.RoPE and nn.RMSNorm layers (not subclasses with other maths, such as Gemma's 1 + w
    norm) use the kernels, by switching each instance's class to the kernel subclass: parameters, saving and
    isinstance checks stay as they were. Returns whether any layer uses them."""
    if _rope_kernel() is None or _rms_norm_kernel() is None:
        return False
    kernel_class = {nn.RoPE: KernelRoPE, nn.RMSNorm: KernelRMSNorm}
    found = False
    for _, layer in model.named_modules():
        if type(layer) in kernel_class:
            layer.__class__ = kernel_class[type(layer)]
        found = found or type(layer) in (KernelRoPE, KernelRMSNorm)
    return found


def scaled_dot_product_attention(queries, keys, values, cache, scale: float, mask, sinks=None, *, fallback):
    """mlx-lm's attention (`mlx_lm.models.base.scaled_dot_product_attention`) for float32 and a plain KV
    cache: the fused kernel where it is built (one pass per query row, masked keys skipped), else the
    softmax above; anything else goes to `fallback`, mlx-lm's own. A compiled decode step's cache
    (engine/decode.py) computes its own attention."""
    if hasattr(cache, "attend"):
        return cache.attend(queries, keys, values, scale)
    if sinks is not None or hasattr(cache, "bits") or queries.dtype != mx.float32:
        return fallback(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)
    fused = _fused_mask(mask, queries.shape[2], keys.shape[2])
    if (fused is not None and not _unfused_blocks and queries.shape[-1] in FUSED_HEAD_DIMS
            and _attention_kernel() is not None):
        return _fused_attention(queries, keys, values, scale, *fused)
    return _unfused_attention(queries, keys, values, scale, mask)


def install(model) -> bool:
    """Use these kernels in the module that defines `model`'s blocks (mlx-lm's `llama`, `qwen2`, `gemma3_text`
    under a gemma3 wrapper, ...) for float32 arrays; other dtypes still reach mlx-lm's own functions. Only
    names the module already imports are replaced, once; the model's plain RoPE and RMSNorm layers use the rope
    and rms_norm kernels (`_install_layers`). Returns whether the model uses any of these kernels now."""
    layers = _install_layers(model)
    module = blocks_module(model)
    if module is None:
        return layers
    original_swiglu = getattr(module, "swiglu", None)
    if original_swiglu is not None and not hasattr(original_swiglu, "locomlx_fallback"):
        def fast_swiglu(gate, up):
            # Small inputs (a one-row decode step) gain little from the faster exp and fuse better with mlx-lm's own.
            smallest = KERNEL_MIN_ELEMENTS if _swiglu_kernel() is not None else PARALLEL_MIN_ELEMENTS
            if gate.dtype == up.dtype == mx.float32 and gate.size >= smallest:
                return swiglu(gate, up)
            return original_swiglu(gate, up)
        fast_swiglu.locomlx_fallback = original_swiglu
        module.swiglu = fast_swiglu
    original_attention = getattr(module, "scaled_dot_product_attention", None)
    if original_attention is not None and not hasattr(original_attention, "locomlx_fallback"):
        def fast_attention(queries, keys, values, cache, scale, mask, sinks=None):
            return scaled_dot_product_attention(queries, keys, values, cache, scale, mask, sinks,
                                                fallback=original_attention)
        fast_attention.locomlx_fallback = original_attention
        module.scaled_dot_product_attention = fast_attention
    return layers or any(_installed(module, name) for name in ("swiglu", "scaled_dot_product_attention"))


def _installed(module, name: str) -> bool:
    return hasattr(getattr(module, name, None), "locomlx_fallback")


def attention_installed(model) -> bool:
    """Whether `install` put this module's attention into `model`'s module (it then also serves the
    compiled decode steps' caches, engine/decode.py)."""
    return _installed(blocks_module(model), "scaled_dot_product_attention")
