"""A linear layer that keeps any number of LoRA adapters resident beside one base layer.

Every wrapped layer shares one `AdapterSelection`. Choosing an adapter for a
request is a single attribute write on that object: no weights are copied,
fused or reloaded, so switching costs well under a microsecond.

A mixed batch (each row with its own adapter, engine/mixed.py) sets
`selection.mix` instead: the layer stacks the batch's adapters side by side,
A = [A_1 | A_2 | ...] and B = [s_1 B_1; s_2 B_2; ...], and weights each row's
columns of x @ A, so one pair of matmuls serves every row:
y += ((x @ A) * row_weights) @ B. A row's weights are 1 on its adapter's
columns and exactly 0 elsewhere, so other adapters add exact zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

from locomlx.models.layers import linear_dims

import mlx.core as mx
import mlx.nn as nn


@dataclass
class AdapterMix:
    """The adapters of one mixed batch, stacked in this order, and each row's weight on every stacked column."""

    names: tuple[str, ...]
    widths: tuple[int, ...]  # columns each adapter takes: its largest rank over all layers
    row_weights: mx.array | None = None  # (rows, 1, sum(widths)); set before each forward pass


@dataclass
class AdapterSelection:
    """Which resident adapter the next forward pass uses (None = the plain base model), or a mixed batch's mix."""

    active: str | None = None
    mix: AdapterMix | None = None


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
        object.__setattr__(self, "_bank", (None, None))  # (key, stacked (A, B) or None) of the last mix

    @property
    def input_dims(self) -> int:
        return linear_dims(self.base)[0]

    @property
    def output_dims(self) -> int:
        return linear_dims(self.base)[1]

    def forget_banks(self) -> None:
        """Drop the stacked weights of the last mix (the engine calls this when adapters are loaded or unloaded)."""
        object.__setattr__(self, "_bank", (None, None))

    def stacked(self, mix: AdapterMix) -> tuple[mx.array, mx.array] | None:
        """A and B of `mix`'s adapters side by side, zero-padded to their widths, scales folded into B;
        None when none of them targets this layer. Kept until the next different mix."""
        key = (mix.names, mix.widths)
        if self._bank[0] == key:
            return self._bank[1]
        bank = None
        if any(name in self.resident for name in mix.names):
            in_dims, out_dims = self.input_dims, self.output_dims
            dtype = next(self.resident[name].a.dtype for name in mix.names if name in self.resident)
            a_blocks, b_blocks = [], []
            for name, width in zip(mix.names, mix.widths):
                lora = self.resident.get(name)
                a = lora.a if lora else mx.zeros((in_dims, 0), dtype)
                b = (lora.scale * lora.b).astype(dtype) if lora else mx.zeros((0, out_dims), dtype)
                pad = width - a.shape[1]
                a_blocks.append(mx.pad(a, [(0, 0), (0, pad)]) if pad else a)
                b_blocks.append(mx.pad(b, [(0, pad), (0, 0)]) if pad else b)
            bank = (mx.concatenate(a_blocks, axis=1), mx.concatenate(b_blocks, axis=0))
            mx.eval(bank)
        object.__setattr__(self, "_bank", (key, bank))
        return bank

    def __call__(self, x: mx.array) -> mx.array:
        y = self.base(x)
        mix = self.selection.mix
        if mix is not None:
            bank = self.stacked(mix)
            if bank is None:
                return y
            a, b = bank
            return y + (((x @ a) * mix.row_weights) @ b).astype(y.dtype)
        lora = self.resident.get(self.selection.active)
        if lora is None:
            return y
        return y + (lora.scale * ((x @ lora.a) @ lora.b)).astype(y.dtype)
