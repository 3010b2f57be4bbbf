"""Post-training low-bit copies of a loaded base model: the formats the 1.58-bit question compares.

Each format rounds every quantizable weight (the linear layers and the embedding, what
`mlx_lm.convert -q` quantizes) to its grid and back, and the model keeps computing in float32.
Scores then measure exactly the information the format keeps, on the same fast float32 path
every run uses, while `pack_model` builds the real packed model for the memory and kernel-speed
columns. The affine formats are MLX's own quantizer (`mx.quantize`, scale and bias per group).
The ternary formats are BitNet b1.58's absmean rule, w = a * round(clip(w / a, -1, 1)) with
a = mean |w|, applied after training (BitNet trains with it; a post-training ternary is the
question whether that is needed). Three levels {-a, 0, a} are MLX's 2-bit affine grid with scale a
and bias -a (codes 0..2), so a ternary model runs in MLX's 2-bit kernel unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from locomlx.errors import LocomlxError
from locomlx.models.load import BaseModel

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

SCALE_BYTES = 2  # scales and biases stored in 16 bits, as mlx_lm.convert saves them


@dataclass(frozen=True)
class LowBitFormat:
    name: str  # "q4", "ternary-g64", ...: also what tags the answers cache
    bits: int  # bits of each stored code in MLX's packing (a ternary code takes 2)
    group_size: int  # weights sharing one scale; 0 = one scale per tensor
    ternary: bool = False

    @property
    def code_bits(self) -> float:
        """The information in one weight's code: log2(3) ~ 1.58 for ternary (packable 5 to a byte)."""
        return math.log2(3) if self.ternary else float(self.bits)

    @property
    def describe(self) -> str:
        if self.ternary:
            scope = "per tensor" if self.group_size == 0 else f"per group of {self.group_size}"
            return f"ternary (absmean {scope}), run as MLX 2-bit"
        return f"MLX affine {self.bits}-bit, group {self.group_size}"


FORMATS = {f.name: f for f in (
    LowBitFormat("q8", 8, 64), LowBitFormat("q6", 6, 64), LowBitFormat("q4", 4, 64),
    LowBitFormat("q3", 3, 64), LowBitFormat("q2", 2, 64),
    LowBitFormat("ternary-g64", 2, 64, ternary=True), LowBitFormat("ternary-tensor", 2, 0, ternary=True),
)}


def quantizable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules a format rounds: float linear and embedding layers whose rows split into groups of 64
    (subclasses included: a base loaded from 4-bit weights has packed layers, locomlx/models/packed.py, which
    fall back to their float32 weight once it is replaced)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.shape[-1] % 64 == 0]


def _ternary_codes(weight: mx.array, group_size: int) -> tuple[mx.array, mx.array]:
    """Codes in {0, 1, 2} (for -a, 0, a), one row per group (or one for the tensor), and each row's a."""
    groups = weight.reshape(-1, group_size or weight.size)
    scale = mx.maximum(mx.mean(mx.abs(groups), axis=-1, keepdims=True), 1e-8)
    return mx.clip(mx.round(groups / scale), -1, 1) + 1, scale


def _ternary_packed(weight: mx.array, group_size: int) -> tuple[mx.array, mx.array, mx.array]:
    """The ternary weight in MLX's 2-bit layout (16 codes per uint32, the first in the low bits), with
    scales and biases per group of 64 (a per-tensor scale repeated)."""
    rows, cols = weight.shape
    codes, scale = _ternary_codes(weight, group_size)
    shifts = mx.arange(16, dtype=mx.uint32) * 2
    packed = mx.sum(codes.astype(mx.uint32).reshape(rows, cols // 16, 16) << shifts, axis=-1).astype(mx.uint32)
    scales = mx.broadcast_to(scale, (scale.shape[0], codes.shape[1] // 64)).reshape(rows, cols // 64)
    return packed, scales, -scales


def round_trip(weight: mx.array, fmt: LowBitFormat) -> mx.array:
    """`weight` rounded to the format's grid, back in float32."""
    weight = weight.astype(mx.float32)
    if fmt.ternary:
        codes, scale = _ternary_codes(weight, fmt.group_size)
        return ((codes - 1) * scale).reshape(weight.shape)
    packed = mx.quantize(weight, group_size=fmt.group_size, bits=fmt.bits)
    return mx.dequantize(*packed, group_size=fmt.group_size, bits=fmt.bits)


def requantize(base: BaseModel, fmt: LowBitFormat) -> BaseModel:
    """Round a float32 base's weights to `fmt` in place. The base's identity gains the format's name, so
    cached answers of the original and of every format stay apart."""
    if base.compute_dtype != "float32":
        raise LocomlxError(f"A low-bit copy is made from a float32 base (this one computes in "
                           f"{base.compute_dtype}); load it with compute_dtype='float32'.")
    modules = quantizable(base.model)
    for _, module in modules:
        module.weight = round_trip(module.weight, fmt)
        mx.eval(module.weight)
    tag = f"{base.resolved.source_hash or base.resolved.reference}+{fmt.name}"
    return replace(base, resolved=replace(base.resolved, source_hash=tag))


def pack_model(model: nn.Module, fmt: LowBitFormat) -> None:
    """Replace the quantizable layers of a float model by MLX quantized layers in `fmt`, in place: the
    model that runs in MLX's quantized kernels."""
    swaps = []
    for name, module in quantizable(model):
        group = fmt.group_size or 64
        packed = (nn.QuantizedEmbedding.from_embedding(module, group, fmt.bits) if isinstance(module, nn.Embedding)
                  else nn.QuantizedLinear.from_linear(module, group, fmt.bits))
        if fmt.ternary:
            packed.weight, packed.scales, packed.biases = _ternary_packed(module.weight.astype(mx.float32),
                                                                          fmt.group_size)
        swaps.append((name, packed))
    model.update_modules(tree_unflatten(swaps))
    mx.eval(model.parameters())


def stored_bytes(model: nn.Module, fmt: LowBitFormat | None) -> int:
    """Bytes the model's weights take stored: quantizable layers at the format's code size plus 16-bit
    scales and biases, everything else at 16 bits; with no format, every weight at 16 bits."""
    rounded = {name for name, _ in quantizable(model)} if fmt else set()
    total = 0.0
    for path, value in tree_flatten(model.parameters()):
        owner = path.rsplit(".", 1)[0]
        if owner in rounded and path.endswith(".weight"):
            groups = value.size / (fmt.group_size or value.size)
            total += value.size * fmt.code_bits / 8 + groups * 2 * SCALE_BYTES
        else:
            total += value.size * SCALE_BYTES
    return int(total)
