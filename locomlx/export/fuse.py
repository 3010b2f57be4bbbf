"""The base model with an adapter (or a composition `a:0.7+b:0.3`) merged into its weights: an mlx-lm model
directory, checked against the unfused adapter before it is trusted.

mlx-lm loads and saves the model (`mlx_lm.utils.load` / `save`). On a quantized base mlx-lm's own fuse
re-quantizes: quantize(dequantize(W) + s·(AB)ᵀ), and on a 4-bit grid a small update can round away. So by
default the layers an adapter touches are kept in float (their config entry says `false`, which mlx-lm
reads as "not quantized") and every other layer stays as it was; `requantize=True` puts them back on the
base's grid. Either way the fused model's next-token logits are compared with the base + adapter as
locomlx runs it, and with the base alone, so a re-quantization that erased the update is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from locomlx.adapters.format import read_adapter
from locomlx.adapters.library import find_adapter
from locomlx.engine.compose import parse_composition
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.models.resolve import resolve_model

import mlx.core as mx
import mlx.nn as nn

# Erased: the fused model misses the unfused one by at least this share of what the adapter changes. Re-quantizing
# adds its own rounding noise (about 0.015 in the logits of the tiny test model, whatever the adapter), so how far
# the fused model moved from the base says nothing alone; how far it lands from where the adapter goes does.
ERASED_SHARE = 0.5


@dataclass
class FuseCheck:
    """How the fused model compares with the unfused adapter on a few prompts."""

    prompts: int
    max_logit_difference: float  # fused vs base + adapter
    adapter_effect: float  # largest logit change the adapter makes over the base
    fused_effect: float  # largest logit change the fused model makes over the base
    greedy_agree: int  # prompts whose greedy answer is the same fused and unfused
    answers: list[tuple[str, str]] = field(default_factory=list)  # (unfused, fused) per prompt

    @property
    def erased(self) -> bool:
        return self.max_logit_difference >= ERASED_SHARE * self.adapter_effect

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "answers"}, "erased": self.erased}


def _deltas(spec: str, library: Path) -> tuple[list[tuple[str, float]], dict[str, mx.array]]:
    """Each target module's summed update s·w·(a @ b), (in, out), for an adapter or a composition."""
    parts = parse_composition(spec) or [(spec, 1.0)]
    deltas: dict[str, mx.array] = {}
    for name, weight in parts:
        adapter = read_adapter(find_adapter(name, library), name)
        for module, (a, b) in adapter.layers.items():
            update = (weight * adapter.scale) * (a.astype(mx.float32) @ b.astype(mx.float32))
            deltas[module] = deltas[module] + update if module in deltas else update
    return parts, deltas


def _fused_layer(layer: nn.Module, delta: mx.array, requantize: bool) -> nn.Module:
    if isinstance(layer, nn.QuantizedLinear):
        weight = mx.dequantize(layer.weight, layer.scales, layer.get("biases"), layer.group_size, layer.bits,
                               mode=layer.mode)
        dtype = layer.scales.dtype
    elif isinstance(layer, nn.Linear):
        weight, dtype = layer.weight, layer.weight.dtype
    else:
        raise LocomlxError(f"cannot fuse into a {type(layer).__name__}; only linear layers are supported")
    out_dims, in_dims = weight.shape
    bias = "bias" in layer
    fused = nn.Linear(in_dims, out_dims, bias=bias)
    fused.weight = (weight.astype(mx.float32) + delta.T).astype(dtype)
    if bias:
        fused.bias = layer.bias
    if requantize and isinstance(layer, nn.QuantizedLinear):
        return nn.QuantizedLinear.from_linear(fused, layer.group_size, layer.bits, mode=layer.mode)
    return fused


def fuse_adapter(spec: str, library: Path, output: Path, base_model: str | None = None,
                 requantize: bool = False) -> Path:
    """Write the fused model to `output` (an mlx-lm directory); returns it."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import load, save

    if output.exists() and any(output.iterdir()):
        raise LocomlxError(f"{output} exists and is not empty; choose another --output or delete it.")
    base_dir = resolve_model(base_model).path
    parts, deltas = _deltas(spec, library)
    model, tokenizer, config = load(str(base_dir), return_config=True)
    modules = dict(model.named_modules())
    missing = [m for m in deltas if m not in modules]
    if missing:
        raise LocomlxError(f"'{spec}' targets {missing[0]}, which this base model does not have.")
    model.update_modules(tree_unflatten([(m, _fused_layer(modules[m], d, requantize)) for m, d in deltas.items()]))
    for key in ("quantization", "quantization_config"):
        if isinstance(config.get(key), dict) and not requantize:
            config[key].update({module: False for module in deltas})
    config["locomlx_fused"] = {"adapters": [{"name": n, "weight": w} for n, w in parts],
                               "requantized": requantize, "base": str(base_dir)}
    save(output, base_dir, model, tokenizer, config, donate_model=False)
    return output


def check_fused(spec: str, library: Path, fused_dir: Path, prompts: list[str], base_model: str | None = None,
                max_tokens: int = 24) -> FuseCheck:
    """Compare the fused model with base + adapter (as locomlx runs them, float32 on a CPU) on `prompts`."""
    from locomlx.prompt import render_prompt, user_turn

    engine = Engine.load(base_model)
    for name, _ in parse_composition(spec) or [(spec, 1.0)]:
        engine.load_adapter(find_adapter(name, library), name)
    adapter = engine.compose(spec)
    fused = Engine.load(str(fused_dir))
    check = FuseCheck(len(prompts), 0.0, 0.0, 0.0, 0)
    for prompt in prompts:
        tokens = mx.array(render_prompt(engine.tokenizer, [user_turn(prompt)]))[None]
        engine.select(None)
        base = engine.model(tokens)[0, -1].astype(mx.float32)
        engine.select(adapter)
        unfused = engine.model(tokens)[0, -1].astype(mx.float32)
        merged = fused.model(tokens)[0, -1].astype(mx.float32)
        check.max_logit_difference = max(check.max_logit_difference, mx.abs(merged - unfused).max().item())
        check.adapter_effect = max(check.adapter_effect, mx.abs(unfused - base).max().item())
        check.fused_effect = max(check.fused_effect, mx.abs(merged - base).max().item())
        messages = [user_turn(prompt)]
        pair = (engine.generate(messages, adapter, max_tokens).text, fused.generate(messages, None, max_tokens).text)
        check.answers.append(pair)
        check.greedy_agree += pair[0] == pair[1]
    return check


def check_prompts(spec: str, library: Path, n: int = 3) -> list[str]:
    """A few questions from the (first) adapter's own benchmark, else general ones."""
    name = (parse_composition(spec) or [(spec, 1.0)])[0][0]
    benchmark = find_adapter(name, library) / "eval" / "benchmark.jsonl"
    if benchmark.is_file():
        rows = [json.loads(line) for line in benchmark.read_text().splitlines()[:n] if line.strip()]
        return [f"{r['instruction']}\n\n{r.get('input', '')}".strip() for r in rows]
    return ["What is the capital of France?", "Is this review positive or negative? A wonderful film.",
            "What is 12 plus 30?"][:n]
