"""A linear layer that keeps any number of LoRA adapters resident beside one base layer.

Every wrapped layer shares one `AdapterSelection`. Choosing an adapter for a
request is a single attribute write on that object: no weights are copied,
fused or reloaded, so switching costs well under a microsecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn


@dataclass
class AdapterSelection:
    """Which resident adapter the next forward pass uses (None = the plain base model)."""

    active: str | None = None


@dataclass(frozen=True)
class LoRAWeights:
    """One adapter's low-rank update for one layer: y += scale * (x @ a) @ b."""

    a: mx.array  # (input_dims, rank)
    b: mx.array  # (rank, output_dims)
    scale: float


def linear_dims(layer: nn.Module) -> tuple[int, int]:
    """(input_dims, output_dims) of a float or quantized linear layer (packed weights hide the input size)."""
    out_dims, in_dims = layer.weight.shape
    if isinstance(layer, nn.QuantizedLinear):
        in_dims = in_dims * 32 // layer.bits
    return in_dims, out_dims


class MultiLoRALinear(nn.Module):
    """Base linear (float or quantized) plus a table of resident LoRA updates."""

    def __init__(self, base: nn.Module, selection: AdapterSelection):
        super().__init__()
        self.base = base
        # object.__setattr__ keeps these out of the MLX parameter tree: resident
        # adapters are data the engine owns, not parameters of the base model.
        object.__setattr__(self, "selection", selection)
        object.__setattr__(self, "resident", {})

    @property
    def input_dims(self) -> int:
        return linear_dims(self.base)[0]

    @property
    def output_dims(self) -> int:
        return linear_dims(self.base)[1]

    def __call__(self, x: mx.array) -> mx.array:
        y = self.base(x)
        lora = self.resident.get(self.selection.active)
        if lora is None:
            return y
        return y + (lora.scale * ((x @ lora.a) @ lora.b)).astype(y.dtype)
