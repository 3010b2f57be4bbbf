"""An adapter as a llama.cpp LoRA (GGUF; the format is described in adapters/gguf_lora.py), with an Ollama
Modelfile beside it, written with the `gguf` package.

llama.cpp scales each layer's update by alpha / rank, with one alpha per file: alpha = scale * the most
common rank, and a layer of another rank has its lora_b rescaled so its update is unchanged.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from locomlx.adapters.format import AdapterFile
from locomlx.adapters.gguf_lora import head_counts, rope_permute, tensor_names

import mlx.core as mx
import numpy as np

CHATML = ('TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
          '{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n'
          '{{ .Response }}<|im_end|>\n"""\nPARAMETER stop "<|im_end|>"\n')


def export_gguf_lora(adapter: AdapterFile, output: Path, base_config: dict) -> Path:
    import gguf

    ranks = Counter(a.shape[1] for a, _ in adapter.layers.values())
    rank = ranks.most_common(1)[0][0]
    alpha = adapter.scale * rank
    names = tensor_names(base_config["model_type"], base_config["num_hidden_layers"])
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(output), base_config["model_type"])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_name(f"{adapter.name} (locomlx LoRA)")
    for module in sorted(adapter.layers):
        a, b = (np.array(t.astype(mx.float32)) for t in adapter.layers[module])
        lora_a, lora_b = a.T, b.T * (a.shape[1] / rank)  # (rank, in), (out, rank); alpha / rank_i == scale
        heads = head_counts(base_config, module.rsplit(".", 1)[-1])
        if heads:
            lora_b = rope_permute(lora_b, heads)
        base = names(module)
        writer.add_tensor(f"{base}.weight.lora_a", np.ascontiguousarray(lora_a))
        writer.add_tensor(f"{base}.weight.lora_b", np.ascontiguousarray(lora_b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return output


def export_fused_gguf(fused_dir: Path, base_gguf: Path, output: Path) -> Path:
    """The fused model (`locomlx fuse`) as one GGUF, for runtimes without LoRA support: the base GGUF's metadata
    and tokenizer as they are, its untouched tensors copied byte for byte, the fused layers in float16 (their
    q/k rows in llama.cpp's order)."""
    import json

    import gguf

    config = json.loads((fused_dir / "config.json").read_text())
    fused_modules = [m for m, q in (config.get("quantization") or {}).items() if q is False]
    if not fused_modules:  # an unquantized base: every linear layer of the fused model is float already
        fused_modules = [k[: -len(".weight")] for k in _weights(fused_dir) if k.endswith("_proj.weight")]
    names = tensor_names(config["model_type"], config["num_hidden_layers"])
    replaced = {f"{names(m)}.weight": m for m in fused_modules}
    weights = _weights(fused_dir)
    reader = gguf.GGUFReader(str(base_gguf))
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(output), config["model_type"])
    for key, entry in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub_type = entry.types[1] if len(entry.types) > 1 else None
        writer.add_key_value(key, entry.contents(), entry.types[0], sub_type)
    for tensor in reader.tensors:
        module = replaced.get(tensor.name)
        if module is None:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
            continue
        rows = np.array(weights[f"{module}.weight"].astype(mx.float32))
        heads = head_counts(config, module.rsplit(".", 1)[-1])
        if heads:
            rows = rope_permute(rows, heads)
        writer.add_tensor(tensor.name, np.ascontiguousarray(rows.astype(np.float16)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return output


def _weights(model_dir: Path) -> dict:
    weights = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        weights.update(mx.load(str(path)))
    return weights


def modelfile(base_gguf: Path | None, lora: Path | None, chat_template: str | None) -> str:
    """An Ollama Modelfile: the base GGUF, the LoRA, and the chat template when it is ChatML (SmolLM2, Qwen)."""
    source = str(base_gguf) if base_gguf else "BASE.gguf  # the base model as GGUF (llama.cpp's convert_hf_to_gguf.py)"
    text = f"FROM {source}\n" + (f"ADAPTER {lora.resolve()}\n" if lora else "")
    if chat_template and "<|im_start|>" in chat_template:
        text += CHATML
    return text
