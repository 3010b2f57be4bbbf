"""Where the parts of any mlx-lm language model are, without assuming it is built like llama.

mlx-lm's models agree on little beyond `model.layers` (the transformer blocks) and `model(tokens, cache)`:
the blocks may sit in `model.model` or in a multimodal wrapper's `language_model.model`; the head may be
`lm_head`, the tied embedding, or either followed by a scaling or a soft-cap (granite, gemma2, cohere);
the embedding may be scaled (gemma, granite). So locomlx reads hidden states by running the model's own
forward pass and keeping the tensors that enter its blocks (MLX is lazy: nothing after the last kept
block is ever computed), and takes a shortcut through the head only where a probe shows it gives the
model's own logits.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

_PROBE = [[1, 2, 3, 4, 5]]


def text_config(config: dict) -> dict:
    """The language model's settings: a multimodal wrapper keeps them in `text_config`, over the top level."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else config


def _find(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(the module that embeds tokens and runs `model.layers`, its parent), breadth first."""
    first = model.layers[0] if len(model.layers) else None  # `model.layers` may be a fresh slice (pipelining)
    queue = [(model, model)]
    while queue:
        module, parent = queue.pop(0)
        layers = module.get("layers") if module is not model else None
        if "embed_tokens" in module and isinstance(layers, list) and layers and layers[0] is first:
            return module, parent
        queue.extend((child, module) for child in module.children().values() if isinstance(child, nn.Module))
    raise ValueError(f"{type(model).__module__}.{type(model).__name__} has no submodule holding embed_tokens "
                     "and the model's layers")


def inner_model(model: nn.Module) -> nn.Module:
    """The module that embeds tokens and runs the blocks (`model.model`, `model.language_model.model`, ...)."""
    return _find(model)[0]


def blocks_module(model: nn.Module):
    """The Python module defining the model's blocks (`mlx_lm.models.gemma3_text` for a gemma3 wrapper):
    where its attention and activation functions are looked up."""
    return sys.modules.get(type(model.layers[0]).__module__) if len(model.layers) else None


def block_linears(model: nn.Module) -> list[str]:
    """Every linear layer in a block, by its name inside the block (`self_attn.q_proj`, `mlp.gate_up_proj`):
    the LoRA targets training, bench and validation use by default."""
    if not len(model.layers):
        return []
    return sorted(name for name, module in model.layers[0].named_modules()
                  if isinstance(module, (nn.Linear, nn.QuantizedLinear)))


class _Tap:
    """Stands in for one block during a forward pass and records the tensor entering it and the one leaving it."""

    def __init__(self, block, index: int, states: dict):
        self.block, self.index, self.states = block, index, states

    def __call__(self, x, *args, **kwargs):
        self.states[self.index] = x
        out = self.block(x, *args, **kwargs)
        self.states[self.index + 1] = out
        return out

    def __getattr__(self, name):  # the model may read a block's attributes (its attention type, ...)
        return getattr(self.block, name)


def block_states(model: nn.Module, tokens: mx.array, wanted: set[int]) -> dict[int, mx.array]:
    """{k: the hidden state entering block k} for each k in `wanted` (k = len(layers): after the last block,
    before the final norm), from the model's own forward pass with its masks and input scaling."""
    layers = inner_model(model).layers
    if any(k < 0 or k > len(layers) for k in wanted):
        raise ValueError(f"block index out of range 0..{len(layers)}: {sorted(wanted)}")
    states: dict[int, mx.array] = {}
    taps = {max(k - 1, 0) for k in wanted}
    originals = {i: layers[i] for i in taps}
    try:
        for i in taps:
            layers[i] = _Tap(originals[i], i, states)
        model(tokens)  # lazy: only what the kept states need is computed when they are evaluated
    finally:
        for i, block in originals.items():
            layers[i] = block
    return {k: states[k] for k in wanted}


@dataclass
class ForwardSplit:
    """The model as trunk (tokens -> last hidden states) and head (hidden states -> logits)."""

    trunk: Callable[[mx.array], mx.array]
    head: Callable[[mx.array], mx.array]


def forward_split(model: nn.Module) -> ForwardSplit | None:
    """The trunk and head, when applying the head to the trunk's output gives the model's own logits on a probe;
    None when the model does more than that (a logit scaling or soft-cap the split would drop)."""
    try:
        inner, parent = _find(model)
    except ValueError:
        return None
    head = parent.lm_head if "lm_head" in parent else inner.embed_tokens.as_linear
    split = ForwardSplit(inner, head)
    probe = mx.array(_PROBE)
    own = model(probe).astype(mx.float32)
    ours = split.head(split.trunk(probe)).astype(mx.float32)
    tolerance = 1e-4 * (1.0 + mx.abs(own).max())
    return split if own.shape == ours.shape and bool((mx.abs(own - ours).max() <= tolerance).item()) else None
