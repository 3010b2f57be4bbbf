"""The qgemv kernel and the packed float32 layers that decode through it (locomlx/models/packed.py)."""

import os
import sys

from locomlx import blas
from locomlx.models import packed
from locomlx.models.kernels import load_kernel

import mlx.core as mx
import mlx.nn as nn
import pytest

_kernel = load_kernel()
if _kernel is None and os.environ.get("CI") and sys.platform.startswith("linux"):
    raise RuntimeError("the CPU kernels are not built: scripts/setup.sh builds it "
                       "(python -m locomlx.models.kernels.build).")
pytestmark = pytest.mark.skipif(_kernel is None, reason="the CPU kernels are not built (scripts/setup.sh builds it)")


def _quantized(out_dims, in_dims, bits, seed=0):
    layer = _with_weight(nn.Linear(in_dims, out_dims, bias=False), seed)
    return nn.QuantizedLinear.from_linear(layer, 32, bits)


def _with_weight(layer, seed):
    mx.random.seed(seed)
    layer.weight = mx.random.normal(layer.weight.shape) * 0.05
    return layer


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 3])
def test_the_kernel_computes_what_mlx_quantized_matmul_computes(bits, rows):
    q = _quantized(200, 96, bits)
    x = mx.random.normal((rows, 96))
    want = mx.quantized_matmul(x, q.weight, q.scales, q.biases, transpose=True, group_size=32, bits=bits)
    got = _kernel.qgemv(x, mx.view(q.weight, mx.uint8), q.scales.astype(mx.float32), q.biases.astype(mx.float32),
                        32, bits)
    assert got.shape == want.shape
    assert mx.allclose(got, want, atol=1e-4).item()


def test_the_kernel_refuses_weights_that_do_not_fit_the_input():
    q = _quantized(64, 96, 4)
    with pytest.raises(ValueError, match="shapes"):
        _kernel.qgemv(mx.zeros((1, 64)), mx.view(q.weight, mx.uint8), q.scales, q.biases, 32, 4)


class _Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(96, 200, bias=False)
        self.embed = nn.Embedding(200, 96)


def _packed_pair():
    """A model whose float32 weights are zero, packed from nonzero quantized layers: which path ran shows."""
    model = _Two()
    model.proj.weight = mx.zeros((200, 96))
    model.embed.weight = mx.zeros((200, 96))
    originals = {"proj": _quantized(200, 96, 4), "embed": nn.QuantizedEmbedding.from_embedding(
        _with_weight(nn.Embedding(200, 96), seed=1), 32, 8)}
    assert packed.pack_layers(model, originals, _kernel) == 2
    model.eval()
    return model, originals


def test_packed_layers_read_their_packed_weights_only_while_decoding():
    model, originals = _packed_pair()
    x = mx.random.normal((1, 96))
    assert not mx.any(model.proj(x)).item()  # outside decoding: the float32 (here zero) weight
    with packed.decoding_on_packed_weights(model):
        inside, head = model.proj(x), model.embed.as_linear(x)
    assert mx.allclose(inside, originals["proj"](x), atol=1e-4).item()
    assert mx.allclose(head, originals["embed"].as_linear(x), atol=1e-4).item()
    assert packed.uses_packed_weights(model)


def test_a_replaced_weight_or_training_mode_falls_back_to_float32():
    model, _ = _packed_pair()
    x = mx.random.normal((1, 96))
    model.train()
    with packed.decoding_on_packed_weights(model):
        assert not mx.any(model.proj(x)).item()
    model.eval()
    model.proj.weight = mx.zeros((200, 96))  # e.g. a fused adapter: the packed copy no longer describes it
    with packed.decoding_on_packed_weights(model):
        assert not mx.any(model.proj(x)).item()
        assert mx.any(model.embed.as_linear(x)).item()


def _blas_threads():
    count = blas.thread_count()
    if count is None:
        pytest.skip("the preloaded BLAS reports no thread count")
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS preload is for Linux CPUs")
def test_decoding_runs_the_blas_on_one_thread_and_restores_it(real_engine):
    before = _blas_threads()
    with packed.decoding_on_packed_weights(real_engine.base.model):
        assert _blas_threads() == 1
    assert _blas_threads() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS preload is for Linux CPUs")
def test_overlapping_decodes_restore_the_blas_threads_when_the_last_one_ends(real_engine):
    """Two decodes open at once, the first ending first: one thread until both end, then the count before."""
    before = _blas_threads()
    model = real_engine.base.model
    first, second = packed.decoding_on_packed_weights(model), packed.decoding_on_packed_weights(model)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert _blas_threads() == 1
    second.__exit__(None, None, None)
    assert _blas_threads() == before


def test_the_embedded_model_decodes_the_same_tokens_on_packed_weights(real_engine):
    """Greedy decoding of the real 4-bit model: the packed path and float32 agree token for token."""
    from locomlx.engine.decode import Decoder, decode

    model = real_engine.base.model
    assert packed.uses_packed_weights(model)
    prompt = real_engine.base.tokenizer.encode("The capital of France is")
    greedy = lambda logits: mx.argmax(logits, axis=-1)  # noqa: E731
    on_packed = list(decode(model, prompt, max_tokens=24, sampler=greedy, stop_tokens=set(), decoder=Decoder(model)))
    layers = [m for _, m in model.named_modules() if isinstance(m, (packed.PackedLinear, packed.PackedEmbedding))]
    saved = [m.__dict__.pop("_packed") for m in layers]
    try:
        on_float32 = list(decode(model, prompt, max_tokens=24, sampler=greedy, stop_tokens=set(),
                                 decoder=Decoder(model)))
    finally:
        for m, weight in zip(layers, saved):
            object.__setattr__(m, "_packed", weight)
    assert on_packed == on_float32
