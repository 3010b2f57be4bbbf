"""Facts about a model's layers that adapters, the engine and the registry's shape checks all need."""

from __future__ import annotations

import mlx.nn as nn


def linear_dims(layer: nn.Module) -> tuple[int, int]:
    """(input_dims, output_dims) of a float or quantized linear layer (packed weights hide the input size)."""
    out_dims, in_dims = layer.weight.shape
    if isinstance(layer, nn.QuantizedLinear):
        in_dims = in_dims * 32 // layer.bits
    return in_dims, out_dims
