"""Adapter composition: answer with a weighted sum of resident LoRAs, never fused into the base.

`a+b` averages its parts (weight 1/2 each); `a:0.7+b:0.3` uses the weights given
(`a:1+b:1` adds both updates whole). The composite becomes one more resident
adapter: per layer A = [A_a | A_b] and B = [w_a s_a B_a ; w_b s_b B_b] with scale 1,
so (x @ A) @ B = sum_i w_i s_i (x @ A_i) @ B_i, exactly the parts' weighted
updates, computed at run time like any adapter (mixed batches included).
"""

from __future__ import annotations

from locomlx.engine.lora import LoRAWeights
from locomlx.errors import LocomlxError

import mlx.core as mx


def parse_composition(spec: str | None) -> list[tuple[str, float]] | None:
    """[(adapter, weight), ...] of a composition such as `a+b` or `a:0.7+b:0.3`; None for a plain adapter name."""
    if spec is None or ("+" not in spec and not _weighted(spec)):
        return None
    parts = []
    for term in spec.split("+"):
        name, weight = (term.rsplit(":", 1) if _weighted(term) else (term, None))
        if not name.strip():
            raise LocomlxError(f"Adapter composition '{spec}' has an empty term; write it as a+b or a:0.7+b:0.3.")
        parts.append((name.strip(), None if weight is None else float(weight)))
    if len({name for name, _ in parts}) != len(parts):
        raise LocomlxError(f"Adapter composition '{spec}' names an adapter twice; give it one weight instead.")
    if all(weight is None for _, weight in parts):
        return [(name, 1 / len(parts)) for name, _ in parts]
    if any(weight is None for _, weight in parts):
        raise LocomlxError(f"Adapter composition '{spec}' weights some adapters but not all; "
                           "give every one a weight (a:0.7+b:0.3) or none (a+b averages them).")
    return parts


def _weighted(term: str) -> bool:
    name, _, weight = term.rpartition(":")
    try:
        float(weight)
    except ValueError:
        return False
    return bool(name)


def composition_name(parts: list[tuple[str, float]]) -> str:
    """The one name a composition is resident under, whichever way it was written."""
    return "+".join(f"{name}:{weight:g}" for name, weight in parts)


def compose_layer(parts: list[tuple[LoRAWeights, float]]) -> LoRAWeights:
    """One layer's weighted sum of LoRA updates as a single update of the summed rank."""
    a = mx.concatenate([lora.a for lora, _ in parts], axis=1)
    b = mx.concatenate([(weight * lora.scale * lora.b).astype(lora.b.dtype) for lora, weight in parts], axis=0)
    return LoRAWeights(a, b, 1.0)
