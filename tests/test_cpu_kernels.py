"""The CPU kernels (models/cpu_kernels.py) against MLX's own: values, gradients, masks, and the installed model."""

from locomlx import heap
from locomlx.models import cpu_kernels
from locomlx.models.load import load_base
from locomlx.models.resolve import resolve_model

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

BIG = (64, 2048)  # over PARALLEL_MIN_ELEMENTS: split across the CPU streams
SMALL = (3, 7)


def _close(a, b, tol):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=tol, atol=tol)


def test_exp_is_accurate_over_its_range_and_clamped_outside():
    x = np.linspace(cpu_kernels.EXP_MIN, cpu_kernels.EXP_MAX, 200_001).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    error = lambda fn: np.max(np.abs(np.array(fn(mx.array(x))).astype(np.float64) - exact) / exact)  # noqa: E731
    assert error(cpu_kernels._exp) < 2e-7 and error(cpu_kernels._exp) < error(mx.exp)  # within ~1 ulp; MLX's is not
    edges = np.array(cpu_kernels._exp(mx.array([-1e9, -100.0, 100.0, 1e9])))
    assert np.allclose(edges, np.exp([cpu_kernels.EXP_MIN] * 2 + [cpu_kernels.EXP_MAX] * 2), rtol=1e-6)
    assert np.all(np.isfinite(edges)) and np.all(edges >= np.finfo(np.float32).tiny)  # no subnormals


@pytest.mark.parametrize("path", ["kernel", "mlx ops"])
@pytest.mark.parametrize("shape", [BIG, SMALL, (2, 5, 300)])
def test_swiglu_and_its_gradient_equal_mlx(shape, path, monkeypatch):
    calls = []
    kernel = cpu_kernels._swiglu_kernel()
    if path == "kernel" and kernel is None:
        pytest.skip("the kernels are not built (scripts/setup.sh)")
    answering = kernel if path == "kernel" else None
    monkeypatch.setattr(cpu_kernels, "_swiglu_kernel", lambda: calls.append(1) or answering)
    gate, up = mx.random.normal(shape, key=mx.random.key(1)) * 4, mx.random.normal(shape, key=mx.random.key(2))
    reference = lambda g, u: nn.silu(g) * u  # noqa: E731
    _close(cpu_kernels.swiglu(gate, up), reference(gate, up), 1e-5)
    weights = mx.random.normal(shape, key=mx.random.key(3))
    loss = lambda f: lambda g, u: (f(g, u) * weights).sum()  # noqa: E731
    got = mx.grad(loss(cpu_kernels.swiglu), argnums=(0, 1))(gate, up)
    want = mx.grad(loss(reference), argnums=(0, 1))(gate, up)
    for g, w in zip(got, want):
        _close(g, w, 1e-4)
    assert calls  # the path asked for answered
    only_up = mx.grad(loss(cpu_kernels.swiglu), argnums=1)(gate.T.T, up[::1])  # one gradient of two; views
    _close(only_up, want[1], 1e-4)


def test_the_swiglu_kernel_refuses_what_it_cannot_take():
    kernel = cpu_kernels._swiglu_kernel()
    if kernel is None:
        pytest.skip("the kernels are not built (scripts/setup.sh)")
    with pytest.raises(ValueError, match="float32 arrays of one shape"):
        kernel.swiglu(mx.zeros((2, 3)), mx.zeros((3, 2)))
    with pytest.raises(ValueError, match="float32 arrays of one shape"):
        kernel.swiglu(mx.zeros((2, 3), dtype=mx.float16), mx.zeros((2, 3), dtype=mx.float16))
    with pytest.raises(ValueError, match="cotangent must be float32"):
        kernel.swiglu_grad(mx.zeros((2, 3)), mx.zeros((2, 3)), mx.zeros((2, 4)))


@pytest.mark.parametrize("shape", [BIG, SMALL])
def test_softmax_and_its_gradient_equal_mlx(shape):
    x = mx.random.normal(shape, key=mx.random.key(4)) * 5
    _close(cpu_kernels.softmax(x), mx.softmax(x, axis=-1), 1e-6)
    weights = mx.random.normal(shape, key=mx.random.key(5))
    got = mx.grad(lambda v: (cpu_kernels.softmax(v) * weights).sum())(x)
    want = mx.grad(lambda v: (mx.softmax(v, axis=-1) * weights).sum())(x)
    _close(got, want, 1e-5)


@pytest.mark.parametrize("n_queries, n_keys, causal", [(40, 40, True), (9, 45, True), (33, 33, False), (1, 7, True)])
def test_the_softmax_kernel_and_its_gradient_equal_mlx_with_the_causal_mask(n_queries, n_keys, causal):
    kernel = cpu_kernels._softmax_kernel()
    if kernel is None:
        pytest.skip("the kernels are not built (scripts/setup.sh)")
    key = iter(mx.random.split(mx.random.key(11), 3))
    scores = mx.random.normal((2, 3, n_queries, n_keys), key=next(key)) * 6
    mask = "causal" if causal else None
    reference = lambda x: mx.softmax(cpu_kernels._masked(x, mask, n_queries, n_keys), axis=-1)  # noqa: E731
    got = kernel.softmax(scores, causal)
    _close(got, reference(scores), 1e-6)
    if causal:  # the hidden keys weigh exactly nothing
        hidden = mx.arange(n_keys)[None, :] > (mx.arange(n_queries) + n_keys - n_queries)[:, None]
        assert mx.all(mx.where(hidden, got, 0.0) == 0).item()
    weights = mx.random.normal(scores.shape, key=next(key))
    want = mx.grad(lambda x: (reference(x) * weights).sum())(scores)
    _close(mx.grad(lambda x: (kernel.softmax(x, causal) * weights).sum())(scores), want, 1e-5)
    _close(mx.grad(lambda x: (kernel.softmax(x, causal) * weights).sum())(scores.swapaxes(0, 1).swapaxes(0, 1)),
           want, 1e-5)  # a strided view is made contiguous first
    with pytest.raises(ValueError, match="L <= S when causal"):
        kernel.softmax(mx.zeros((4, 3)), True)
    with pytest.raises(ValueError, match="must be float32"):
        kernel.softmax(mx.zeros((3, 3), dtype=mx.float16))


def test_a_training_step_attends_with_the_softmax_kernel(monkeypatch):
    kernel = cpu_kernels._softmax_kernel()
    if kernel is None:
        pytest.skip("the kernels are not built (scripts/setup.sh)")
    calls = []
    monkeypatch.setattr(cpu_kernels, "_softmax_kernel", lambda: calls.append(1) or kernel)
    key = iter(mx.random.split(mx.random.key(12), 3))
    queries = mx.random.normal((2, 6, 64, 64), key=next(key))
    keys, values = (mx.random.normal((2, 2, 64, 64), key=next(key)) for _ in range(2))
    with cpu_kernels.unfused_attention():
        got = cpu_kernels.scaled_dot_product_attention(queries, keys, values, None, 0.125, "causal",
                                                       fallback=_fallback)
    assert calls
    _close(got, _fallback(queries, keys, values, None, 0.125, "causal"), 2e-5)


def _fallback(queries, keys, values, cache, scale, mask, sinks=None):
    return mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)


@pytest.mark.parametrize("n_queries, n_keys, mask", [(12, 12, "causal"), (3, 12, "causal"), (1, 12, None),
                                                      (12, 12, "bool"), (5, 12, "additive")])
def test_attention_equals_mlx_with_grouped_heads_and_every_mask_kind(n_queries, n_keys, mask):
    key = iter(mx.random.split(mx.random.key(6), 4))
    queries = mx.random.normal((2, 6, n_queries, 16), key=next(key))
    keys, values = (mx.random.normal((2, 2, n_keys, 16), key=next(key)) for _ in range(2))
    if mask == "bool":
        mask = mx.random.uniform(shape=(2, 1, n_queries, n_keys), key=next(key)) > 0.3
        mask[..., 0] = True  # every query sees at least one key
    elif mask == "additive":
        mask = mx.where(mx.random.uniform(shape=(n_queries, n_keys), key=next(key)) > 0.5, 0.0, -1e4)
    got = cpu_kernels.scaled_dot_product_attention(queries, keys, values, None, 0.25, mask, fallback=_fallback)
    _close(got, _fallback(queries, keys, values, None, 0.25, mask), 1e-5)


@pytest.mark.skipif(cpu_kernels._attention_kernel() is None, reason="the kernels are not built (scripts/setup.sh)")
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("n_queries, n_keys, mask", [(40, 40, "causal"), (9, 40, "causal"), (1, 40, None),
                                                      (40, 40, "bool"), (9, 40, "bool2d"), (6, 6, "left padding")])
def test_the_fused_attention_and_its_gradient_equal_the_unfused_one(dim, n_queries, n_keys, mask, monkeypatch):
    key = iter(mx.random.split(mx.random.key(7), 5))
    queries = mx.random.normal((3, 6, n_queries, dim), key=next(key))
    keys, values = (mx.random.normal((3, 2, n_keys, dim), key=next(key)) for _ in range(2))
    if mask == "bool":
        mask = mx.random.uniform(shape=(3, 1, n_queries, n_keys), key=next(key)) > 0.3
        mask[..., 0] = True
    elif mask == "bool2d":
        mask = mx.random.uniform(shape=(n_queries, n_keys), key=next(key)) > 0.3
        mask[..., -1] = True
    elif mask == "left padding":  # a batch of prompts padded on the left, as mlx-lm's BatchKVCache masks them
        from mlx_lm.models.base import create_causal_mask
        mask = create_causal_mask(n_queries, n_keys - n_queries, left_padding=mx.array([0, 2, 3]))
    calls = []
    kernel = cpu_kernels._attention_kernel()
    monkeypatch.setattr(cpu_kernels, "_attention_kernel", lambda: calls.append(1) or kernel)
    attention = lambda q, k, v: cpu_kernels.scaled_dot_product_attention(q, k, v, None, 0.2, mask,  # noqa: E731
                                                                         fallback=_fallback)
    got = attention(queries, keys, values)
    assert calls  # the fused kernel answered, not the unfused path
    calls.clear()
    with cpu_kernels.unfused_attention():  # as a training step traces its graph
        attention(queries, keys, values)
    assert not calls
    want = cpu_kernels._unfused_attention(queries, keys, values, 0.2, mask)
    if not isinstance(mask, (str, type(None))):  # padding rows (no key left) are zeros, never NaN
        seen = mx.broadcast_to(mask if mask.ndim == 4 else mask[None, None], (3, 1, n_queries, n_keys)).any(-1)
        assert not mx.isnan(got).any().item() and mx.all(mx.where(seen[..., None], 0.0, got) == 0).item()
        got, want = (mx.where(seen[..., None], a, 0.0) for a in (got, want))
    _close(got, want, 2e-5)
    weights = mx.random.normal(got.shape, key=next(key))
    loss = lambda f: lambda q, k, v: (f(q, k, v) * weights).sum()  # noqa: E731
    unfused = lambda q, k, v: cpu_kernels._unfused_attention(q, k, v, 0.2, mask)  # noqa: E731
    if isinstance(mask, (str, type(None))):
        for g, w in zip(mx.grad(loss(attention), argnums=(0, 1, 2))(queries, keys, values),
                        mx.grad(loss(unfused), argnums=(0, 1, 2))(queries, keys, values)):
            _close(g, w, 1e-4)


@pytest.mark.skipif(cpu_kernels._attention_kernel() is None, reason="the kernels are not built (scripts/setup.sh)")
def test_the_fused_attention_reads_views_where_they_lie():
    """A KV cache hands out a slice of its preallocated buffer and the queries come as a transposed projection:
    the kernel reads them in place (a strided last axis and a batch broadcast too), as if they were copies."""
    key = iter(mx.random.split(mx.random.key(8), 4))
    queries = mx.random.normal((3, 2, 6, 64), key=next(key)).transpose(0, 2, 1, 3)  # (B, H, L, D), a view
    buffer = mx.random.normal((3, 2, 256, 64), key=next(key))
    keys = buffer[..., :40, :]  # a cache's keys
    values = mx.random.normal((1, 2, 64, 40), key=next(key)).swapaxes(-1, -2)  # strided last axis
    values = mx.broadcast_to(values, (3, 2, 40, 64))  # stride 0 over the batch
    from mlx_lm.models.base import create_causal_mask
    mask = create_causal_mask(2, 38, left_padding=mx.array([0, 5, 9]))
    got = cpu_kernels._attention_kernel().attention(queries, keys, values, 0.2, False, mask)
    dense = [mx.array(np.array(a)) for a in (queries, keys, values)]
    _close(got, cpu_kernels._unfused_attention(*dense, 0.2, mask), 2e-5)


def test_the_fused_attention_refuses_shapes_it_cannot_take():
    kernel = cpu_kernels._attention_kernel()
    if kernel is None:
        pytest.skip("the kernels are not built (scripts/setup.sh)")
    q = mx.zeros((1, 4, 3, 64))
    with pytest.raises(ValueError, match="multiple of H_kv"):
        kernel.attention(q, mx.zeros((1, 3, 3, 64)), mx.zeros((1, 3, 3, 64)), 1.0)
    with pytest.raises(ValueError, match="head dimension"):
        kernel.attention(mx.zeros((1, 4, 3, 48)), mx.zeros((1, 2, 3, 48)), mx.zeros((1, 2, 3, 48)), 1.0)
    with pytest.raises(ValueError, match="mask must be boolean"):
        kernel.attention(q, mx.zeros((1, 2, 3, 64)), mx.zeros((1, 2, 3, 64)), 1.0, False, mx.zeros((1, 1, 3, 3)))


def test_other_dtypes_and_attention_sinks_go_to_the_fallback():
    calls = []
    fallback = lambda *a, **k: calls.append(1) or _fallback(*a[:4], k["scale"], k["mask"])  # noqa: E731
    q = mx.zeros((1, 2, 3, 8), dtype=mx.bfloat16)
    cpu_kernels.scaled_dot_product_attention(q, q, q, None, 1.0, "causal", fallback=fallback)
    assert calls == [1]


def test_installed_model_matches_mlx_kernels_and_install_is_idempotent(tiny_model, monkeypatch):
    base = load_base(resolve_model(str(tiny_model)), "float32")  # installs on the CPU
    module = __import__(type(base.model).__module__, fromlist=["swiglu"])
    assert hasattr(module.swiglu, "locomlx_fallback")
    assert hasattr(module.scaled_dot_product_attention, "locomlx_fallback")
    tokens = mx.array([[5, 17, 42, 99, 7, 3, 60, 8, 21, 33]])
    fast = base.model(tokens)
    wrapped = module.swiglu, module.scaled_dot_product_attention
    assert cpu_kernels.install(base.model) and (module.swiglu, module.scaled_dot_product_attention) == wrapped
    monkeypatch.setattr(module, "swiglu", module.swiglu.locomlx_fallback)
    monkeypatch.setattr(module, "scaled_dot_product_attention", module.scaled_dot_product_attention.locomlx_fallback)
    _close(fast, base.model(tokens), 1e-4)


needs_kernels = pytest.mark.skipif(cpu_kernels._rope_kernel() is None or cpu_kernels._rms_norm_kernel() is None,
                                   reason="the kernels are not built (scripts/setup.sh)")


@needs_kernels
@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("dims, offset", [(64, 0), (64, 37), (32, 5), (64, "per row")])
def test_the_rope_kernel_and_its_gradient_equal_mlx(dims, offset, traditional):
    # queries as the projection lays them out: a transposed view, read in place
    x = mx.random.normal((3, 40, 4, 64), key=mx.random.key(4)).transpose(0, 2, 1, 3)
    offset = mx.array([3, 90, 17]) if offset == "per row" else offset
    rope = nn.RoPE(dims, traditional=traditional, base=10000.0, scale=0.5)
    want = rope(x, offset)
    rope.__class__ = cpu_kernels.KernelRoPE
    assert x.size >= cpu_kernels.KERNEL_MIN_ELEMENTS
    _close(rope(x, offset), want, 1e-4)
    weights = mx.random.normal(x.shape, key=mx.random.key(5))
    got = mx.grad(lambda a: (rope(a, offset) * weights).sum())(x)
    reference = lambda a: (mx.fast.rope(a, dims, traditional=traditional, base=10000.0, scale=0.5,  # noqa: E731
                                        offset=offset) * weights).sum()
    _close(got, mx.grad(reference)(x), 1e-4)
    assert "LocomlxRoPE" in _primitives(lambda a: rope(a, offset), x)


@needs_kernels
@pytest.mark.parametrize("shape", [(3, 40, 576), (1, 4096), (2, 8, 100)])
def test_the_rms_norm_kernel_and_its_gradient_equal_mlx(shape):
    x = mx.random.normal(shape, key=mx.random.key(6)) * 3
    norm = nn.RMSNorm(shape[-1], eps=1e-5)
    norm.weight = mx.random.normal((shape[-1],), key=mx.random.key(7))
    want = norm(x)
    norm.__class__ = cpu_kernels.KernelRMSNorm
    _close(norm(x), want, 1e-5)
    # the last shape is below KERNEL_MIN_ELEMENTS: MLX's own answers it
    assert ("LocomlxRMSNorm" in _primitives(norm, x)) == (x.size >= cpu_kernels.KERNEL_MIN_ELEMENTS)
    weights = mx.random.normal(shape, key=mx.random.key(8))
    loss = lambda a, w: (mx.fast.rms_norm(a, w, 1e-5) * weights).sum()  # noqa: E731
    got = mx.grad(lambda a, w: (cpu_kernels._rms_norm(a, w, 1e-5) * weights).sum(), argnums=(0, 1))(x, norm.weight)
    assert "LocomlxRMSNormGrad" in _primitives(lambda a: mx.grad(
        lambda b: (cpu_kernels._rms_norm(b, norm.weight, 1e-5) * weights).sum())(a), x)  # the kernel's gradient
    for g, w in zip(got, mx.grad(loss, argnums=(0, 1))(x, norm.weight)):
        _close(g, w, 1e-4)


def _primitives(fn, x) -> str:
    """The names of the primitives `fn(x)`'s graph is made of (MLX's DOT export of it)."""
    import io

    out = io.StringIO()
    mx.export_to_dot(out, fn(x))
    return out.getvalue()


@needs_kernels
def test_the_rope_and_rms_norm_kernels_refuse_what_they_cannot_take():
    kernel = cpu_kernels._rope_kernel()
    x = mx.zeros((2, 3, 4, 8))
    with pytest.raises(ValueError, match="dims must be even"):
        kernel.rope(x, 7, False, 10000.0, 1.0, mx.array([0]))
    with pytest.raises(ValueError, match="one position, or one per batch row"):
        kernel.rope(x, 8, False, 10000.0, 1.0, mx.array([0, 1, 2]))
    with pytest.raises(ValueError, match="float32 \\(B, H, L, D\\)"):
        kernel.rope(mx.zeros((3, 4, 8)), 8, False, 10000.0, 1.0, mx.array([0]))
    with pytest.raises(ValueError, match="weight float32 \\(D,\\)"):
        cpu_kernels._rms_norm_kernel().rms_norm(mx.zeros((2, 8)), mx.zeros((4,)), 1e-5)


@needs_kernels
def test_install_moves_plain_rope_and_norm_layers_to_the_kernels_and_small_inputs_stay_on_mlx(tiny_model,
                                                                                              monkeypatch):
    base = load_base(resolve_model(str(tiny_model)), "float32")  # installs on the CPU
    layers = [layer for _, layer in base.model.named_modules()]
    assert any(type(layer) is cpu_kernels.KernelRoPE for layer in layers)
    assert all(type(layer) is not nn.RMSNorm for layer in layers)

    class OtherNorm(nn.RMSNorm):  # a norm with its own maths (Gemma's 1 + w) keeps it
        pass

    other = nn.Sequential(OtherNorm(8), nn.RMSNorm(8))
    cpu_kernels.install(other)
    assert type(other.layers[0]) is OtherNorm and type(other.layers[1]) is cpu_kernels.KernelRMSNorm
    tokens = mx.array([[5, 17, 42, 99, 7, 3, 60, 8, 21, 33]])
    small = base.model(tokens)  # below KERNEL_MIN_ELEMENTS: mx.fast's
    assert "LocomlxRMSNorm" not in _primitives(base.model, tokens)
    monkeypatch.setattr(cpu_kernels, "KERNEL_MIN_ELEMENTS", 0)
    assert "LocomlxRMSNorm" in _primitives(base.model, tokens) and "LocomlxRoPE" in _primitives(base.model, tokens)
    _close(base.model(tokens), small, 1e-4)


@needs_kernels
def test_kernels_evaluated_from_two_threads_at_once_answer_as_alone():
    """The kernels share one set of threads; calls from two threads (two streams) must not mix their parts."""
    import threading

    gate, up = mx.random.normal((64, 2048), key=mx.random.key(9)), mx.random.normal((64, 2048), key=mx.random.key(10))
    x = mx.random.normal((4, 9, 64, 64), key=mx.random.key(11))
    kernel = cpu_kernels._swiglu_kernel()
    want_gating = kernel.swiglu(gate, up)
    want_rope = cpu_kernels._rope_kernel().rope(x, 64, False, 10000.0, 1.0, mx.array([7]))
    mx.eval(want_gating, want_rope)
    failures = []

    def repeat(make, want):
        with mx.stream(mx.new_stream(mx.cpu)):
            for _ in range(100):
                if not mx.array_equal(make(), want).item():
                    failures.append(make)

    threads = [threading.Thread(target=repeat, args=(lambda: kernel.swiglu(gate, up), want_gating)),
               threading.Thread(target=repeat, args=(lambda: cpu_kernels._rope_kernel().rope(
                   x, 64, False, 10000.0, 1.0, mx.array([7])), want_rope))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_malloc_keeps_freed_memory_on_linux():
    import sys

    assert heap.keep_freed_memory() is sys.platform.startswith("linux")


@needs_kernels
@pytest.mark.parametrize("shape, axis, keepdims", [((16, 5000), -1, True), ((3, 2, 5000), 2, False),
                                                   ((1, 5000), None, True), ((1, 1, 5000), None, False)])
def test_logsumexp_is_mlx_s_for_every_way_mlx_lm_asks(shape, axis, keepdims):
    x = mx.random.normal(shape, key=mx.random.key(13)) * 6
    got = cpu_kernels.logsumexp(x, axis=axis, keepdims=keepdims)
    want = mx.logsumexp(x, axis=axis, keepdims=keepdims)
    assert got.shape == want.shape and "LocomlxLogSumExp" in _primitives(
        lambda a: cpu_kernels.logsumexp(a, axis=axis, keepdims=keepdims), x)
    exact = np.log(np.exp(np.array(x, dtype=np.float64)).sum(axis=-1))  # every case reduces the last axis
    np.testing.assert_allclose(np.array(got).ravel(), exact.ravel(), rtol=1e-6)  # MLX's own is off by up to 3e-6
    grad = mx.grad(lambda a: (cpu_kernels.logsumexp(a, axis=axis, keepdims=keepdims) ** 2).sum())(x)
    _close(grad, mx.grad(lambda a: (mx.logsumexp(a, axis=axis, keepdims=keepdims) ** 2).sum())(x), 1e-5)


@needs_kernels
def test_logsumexp_keeps_mlx_s_answers_at_the_edges_and_elsewhere():
    x = mx.random.normal((4, 5000), key=mx.random.key(14))
    x[1, :] = -float("inf")  # every token masked
    x[2, 9] = float("inf")
    x[3, 5] = float("nan")
    got = np.array(cpu_kernels.logsumexp(x, axis=-1))
    assert got[1] == -np.inf and got[2] == np.inf and np.isnan(got[3])
    for other in (dict(axis=0), dict(axis=None)):  # not the last axis alone: MLX's
        assert "LocomlxLogSumExp" not in _primitives(lambda a: cpu_kernels.logsumexp(a, **other), x)
    small = mx.ones((2, 8))
    assert "LocomlxLogSumExp" not in _primitives(lambda a: cpu_kernels.logsumexp(a, axis=-1), small)
    with pytest.raises(ValueError, match="float32"):
        cpu_kernels._logsumexp_kernel().logsumexp(mx.zeros((2, 8), dtype=mx.float16))


@needs_kernels
def test_batched_generation_normalises_its_logits_with_the_kernel(tiny_model, monkeypatch):
    """mlx-lm's BatchGenerator takes each step's log-probabilities as logits - logsumexp(logits): loading a
    model on the CPU points it at the kernel, with the same tokens and log-probabilities as MLX's."""
    import sys

    from locomlx.engine.batching import generate_rows

    base = load_base(resolve_model(str(tiny_model)), "float32")
    generation = sys.modules["mlx_lm.generate"]
    assert generation.mx.logsumexp is cpu_kernels.logsumexp and generation.mx.array is mx.array
    monkeypatch.setattr(cpu_kernels, "KERNEL_MIN_ELEMENTS", 0)  # the tiny model's vocabulary is small
    kernel, calls = cpu_kernels._logsumexp_kernel(), []
    monkeypatch.setattr(cpu_kernels, "_logsumexp_kernel", lambda: calls.append(1) or kernel)

    def generate():
        return generate_rows(base.model, [[5, 17, 42], [7, 3], [60, 8, 21, 33, 9]], None, max_tokens=6, batch_size=3,
                             sampler=lambda x: mx.argmax(x, -1), stop_tokens=[], stream=mx.default_stream(mx.cpu),
                             logprobs=True)

    with_kernel = generate()
    assert calls
    monkeypatch.setattr(generation, "mx", mx)
    with_mlx = generate()
    assert with_kernel.token_ids == with_mlx.token_ids
    _close(sum(with_kernel.logprobs, []), sum(with_mlx.logprobs, []), 1e-5)
    assert cpu_kernels.install_in_generation() and generation.mx is not mx  # and installing again is a no-op


@needs_kernels
def test_training_cross_entropy_is_mlx_s_with_its_gradient():
    logits = mx.random.normal((3, 7, 5000), key=mx.random.key(15)) * 4
    targets = mx.random.randint(0, 5000, (3, 7), key=mx.random.key(16))
    weights = mx.random.uniform(shape=(3, 7), key=mx.random.key(17))
    assert "LocomlxLogSumExp" in _primitives(lambda a: cpu_kernels.cross_entropy(a, targets), logits)
    _close(cpu_kernels.cross_entropy(logits, targets), nn.losses.cross_entropy(logits, targets), 1e-5)
    ours = mx.grad(lambda a: (cpu_kernels.cross_entropy(a, targets) * weights).sum())(logits)
    _close(ours, mx.grad(lambda a: (nn.losses.cross_entropy(a, targets) * weights).sum())(logits), 1e-6)
