"""Float32 layers that keep their quantized source, so few-row products read the packed weights.

A base loaded from 4-bit weights computes in float32 on a CPU (MKL's threaded matmuls beat MLX's
single-threaded quantized kernel for prompts and training). Decoding multiplies one row per step, where
reading the weights is the whole cost: there the packed 4- or 8-bit weights, read by the `qgemv` kernel
on every core, are four to eight times fewer bytes. Each packed layer is still an ordinary float32
`nn.Linear` or `nn.Embedding`: its parameters, LoRA wrapping, fusing and training are unchanged. The packed
copy (not a parameter) is used only inside `decoding_on_packed_weights` (one-token decode steps; prompts and
batches stay on MKL's matmuls, which are faster there), in eval mode, and only while the layer's weight is
still the array it was packed from (a fused or reloaded weight falls back to float32).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

from locomlx.blas import set_thread_count

import mlx.core as mx
import mlx.nn as nn

_decoding = 0  # how many `decoding_on_packed_weights` blocks are open
_threads_before: int | None = None  # the BLAS's thread count when the first of them opened
_decoding_lock = threading.Lock()


@dataclass(frozen=True)
class PackedWeight:
    """A layer's weight as MLX quantized it: packed values viewed as uint8, float32 scales and biases."""

    values: mx.array
    scales: mx.array
    biases: mx.array
    group_size: int
    bits: int
    source: mx.array  # the float32 weight these came from; the packed copy is valid while it is the layer's


def _pack(quantized: nn.Module, weight: mx.array) -> PackedWeight:
    return PackedWeight(mx.view(quantized.weight, mx.uint8), quantized.scales.astype(mx.float32),
                        quantized.biases.astype(mx.float32), quantized.group_size, quantized.bits, weight)


def _packed_product(layer: nn.Module, x: mx.array) -> mx.array | None:
    packed = layer.__dict__.get("_packed")
    if not _decoding or packed is None or layer.training or layer["weight"] is not packed.source:
        return None
    return layer._kernel.qgemv(x, packed.values, packed.scales, packed.biases, packed.group_size, packed.bits)


class PackedLinear(nn.Linear):
    def __call__(self, x: mx.array) -> mx.array:
        y = _packed_product(self, x)
        if y is None:
            return super().__call__(x)
        return y + self["bias"] if "bias" in self else y


class PackedEmbedding(nn.Embedding):
    def as_linear(self, x: mx.array) -> mx.array:
        y = _packed_product(self, x)
        return super().as_linear(x) if y is None else y


def pack_layers(model: nn.Module, quantized: dict[str, nn.Module], kernel) -> int:
    """Give each float32 layer of `model` whose quantized original is in `quantized` (by module name, 4- or
    8-bit affine) its packed weight; returns how many were packed."""
    packed = []
    for name, layer in model.named_modules():
        source = quantized.get(name)
        if source is None or getattr(source, "mode", "affine") != "affine" or source.bits not in (4, 8):
            continue
        if type(layer) is nn.Linear:
            layer.__class__ = PackedLinear
        elif type(layer) is nn.Embedding:
            layer.__class__ = PackedEmbedding
        else:
            continue
        weight = _pack(source, layer["weight"])
        object.__setattr__(layer, "_packed", weight)  # an attribute, not a parameter: never saved or trained
        object.__setattr__(layer, "_kernel", kernel)
        packed.append(weight)
    mx.eval([(w.values, w.scales, w.biases) for w in packed])
    return len(packed)


def decode_weight_bytes(model: nn.Module) -> int:
    """The bytes of weights a decode step reads: a packed layer's packed copy, every other parameter as
    stored (the bench's physical limit divides the memory bandwidth by this)."""
    from mlx.utils import tree_flatten

    total = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    for _, layer in model.named_modules():
        weight = layer.__dict__.get("_packed")
        if weight is not None:
            total += weight.values.nbytes + weight.scales.nbytes + weight.biases.nbytes - layer["weight"].nbytes
    return total


def uses_packed_weights(model: nn.Module) -> bool:
    return any(isinstance(m, (PackedLinear, PackedEmbedding)) for _, m in model.named_modules())


@contextmanager
def decoding_on_packed_weights(model: nn.Module):
    """Within the block the model's packed layers read their packed weights, and the BLAS runs on one
    thread: the kernel's threads and MKL's (still waking for the step's small attention products) would
    contend for the cores, and decode measured half as fast with both on 2 cores.

    Blocks may overlap (a decode is a generator, and two can be open at once, their ends in any order): the
    first to open sets the BLAS to one thread and the last to close restores the count the first found."""
    global _decoding, _threads_before
    if not uses_packed_weights(model):
        yield
        return
    with _decoding_lock:
        if _decoding == 0:
            _threads_before = set_thread_count(1)
        _decoding += 1
    try:
        yield
    finally:
        with _decoding_lock:
            _decoding -= 1
            if _decoding == 0:
                set_thread_count(_threads_before)
