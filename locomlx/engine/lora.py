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
        weight = self.base.weight
        if isinstance(self.base, nn.QuantizedLinear):
            return weight.shape[1] * 32 // self.base.bits
        return weight.shape[1]

    @property
    def output_dims(self) -> int:
        return self.base.weight.shape[0]

    def __call__(self, x: mx.array) -> mx.array:
        y = self.base(x)
        lora = self.resident.get(self.selection.active)
        if lora is None:
            return y
        return y + (lora.scale * ((x @ lora.a) @ lora.b)).astype(y.dtype)
