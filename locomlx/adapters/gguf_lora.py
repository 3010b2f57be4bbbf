"""llama.cpp's LoRA adapter format (GGUF), both ways: the tensor names, the q/k row order, and reading one.

A llama.cpp LoRA is a GGUF with `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`
and, per target, `blk.N.<tensor>.weight.lora_a` (rank x in) and `.lora_b` (out x rank), named as the base
model's GGUF names its weights (the `gguf` package's tensor-name map). llama.cpp scales each update by
alpha / rank. For llama-family models llama.cpp's converter reorders the rows of the q and k projections
(its rope layout), so the lora_b of those two is reordered the same way; mlx-lm's order is the original.
"""

from __future__ import annotations

import json
from pathlib import Path

from locomlx.errors import LocomlxError

import numpy as np

PERMUTED_ARCHS = ("llama", "mistral")  # the models llama.cpp's converter reorders q/k rows for


def gguf_arch(model_type: str):
    import gguf

    for arch, name in gguf.MODEL_ARCH_NAMES.items():
        if name == model_type:
            return arch
    raise LocomlxError(f"llama.cpp has no architecture named '{model_type}'; GGUF export supports "
                       "the architectures of the gguf package.")


def tensor_names(model_type: str, num_layers: int):
    """module path ('model.layers.0.self_attn.q_proj') -> GGUF tensor name ('blk.0.attn_q')."""
    import gguf

    mapping = gguf.get_tensor_name_map(gguf_arch(model_type), num_layers)

    def name(module: str) -> str:
        found = mapping.get_name(module)
        if found is None:
            raise LocomlxError(f"'{module}' has no GGUF tensor name for {model_type}; it cannot be exported.")
        return found

    return name


def rope_permute(rows: np.ndarray, heads: int, inverse: bool = False) -> np.ndarray:
    """llama.cpp's q/k row order: within each head the two rotary halves interleaved (its `permute`)."""
    shape = rows.shape
    if inverse:
        return rows.reshape(heads, rows.shape[0] // heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def head_counts(config: dict, leaf: str) -> int | None:
    """Heads whose rows llama.cpp reorders for `leaf` (q_proj: attention heads, k_proj: kv heads), or None."""
    if config.get("model_type") not in PERMUTED_ARCHS:
        return None
    if leaf == "q_proj":
        return config["num_attention_heads"]
    if leaf == "k_proj":
        return config.get("num_key_value_heads", config["num_attention_heads"])
    return None


def read_gguf_lora(path: Path, base_config: dict, output: Path) -> Path:
    """Write the llama.cpp LoRA at `path` as an mlx-lm adapter directory `output` (for `adapters install`)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises many kinds on a damaged file
        raise LocomlxError(f"{path} is not a readable GGUF file ({exc})") from exc

    def field(key):
        entry = reader.fields.get(key)
        return entry.contents() if entry is not None else None

    if field("general.type") != "adapter" or field("adapter.type") != "lora":
        raise LocomlxError(f"{path} is a GGUF file but not a LoRA adapter (general.type {field('general.type')!r}, "
                           f"adapter.type {field('adapter.type')!r}); give a llama.cpp LoRA adapter")
    alpha = float(field("adapter.lora.alpha") or 0)
    layers = base_config["num_hidden_layers"]
    names = tensor_names(base_config["model_type"], layers)
    module_of = {}
    for index in range(layers):
        for leaf in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            module = f"model.layers.{index}.{leaf}"
            try:
                module_of[names(module)] = module
            except LocomlxError:
                continue
    parts: dict[str, dict[str, np.ndarray]] = {}
    for tensor in reader.tensors:
        base, _, kind = tensor.name.rpartition(".weight.")
        if kind not in ("lora_a", "lora_b") or base not in module_of:
            raise LocomlxError(f"{path}: tensor '{tensor.name}' is not a LoRA tensor of a supported layer")
        parts.setdefault(module_of[base], {})[kind] = np.array(tensor.data, dtype=np.float32)
    if not parts:
        raise LocomlxError(f"{path} holds no LoRA tensors")
    import mlx.core as mx

    tensors, ranks, keys = {}, set(), set()
    for module, pair in parts.items():
        if set(pair) != {"lora_a", "lora_b"}:
            raise LocomlxError(f"{path}: '{module}' has only {', '.join(pair)}; the file is incomplete")
        a, b = pair["lora_a"], pair["lora_b"]  # (rank, in), (out, rank)
        heads = head_counts(base_config, module.rsplit(".", 1)[-1])
        if heads:
            b = rope_permute(b, heads, inverse=True)
        rank = a.shape[0]
        scale = (alpha / rank) if alpha else 1.0
        tensors[f"{module}.lora_a"] = mx.array(np.ascontiguousarray(a.T))
        tensors[f"{module}.lora_b"] = mx.array(np.ascontiguousarray(b.T * scale))  # scale folded: config says 1
        ranks.add(rank)
        keys.add(module.split(".", 3)[3])
    output.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(output / "adapter_model.safetensors"), tensors)
    config = {"fine_tune_type": "lora", "num_layers": layers,
              "lora_parameters": {"rank": max(ranks), "scale": 1.0, "dropout": 0.0, "keys": sorted(keys)},
              "base_model": base_config.get("_name_or_path", ""), "converted_from": f"llama.cpp LoRA {path.name}"}
    (output / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return output
