"""An adapter in Hugging Face PEFT's layout, for transformers users: `adapter_config.json` (r, lora_alpha,
target_modules, base_model_name_or_path) and `adapter_model.safetensors` with
`base_model.model.<module>.lora_A.weight` (r, in) and `lora_B.weight` (out, r), with transformers' module
paths (a multimodal wrapper's language model under `model.language_model.`).

PEFT scales an update by lora_alpha / r, so lora_alpha = scale * r; layers of another rank get their own
`rank_pattern` / `alpha_pattern` entry. locomlx reads the result back as it reads any PEFT adapter.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from locomlx.adapters.format import AdapterFile, peft_module
from locomlx.atomic import write_json_atomic

import mlx.core as mx


def export_peft(adapter: AdapterFile, output: Path, base_model: str) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    tensors, ranks = {}, {}
    for module, (a, b) in adapter.layers.items():
        tensors[f"{peft_module(module)}.lora_A.weight"] = mx.contiguous(a.T.astype(mx.float32))
        tensors[f"{peft_module(module)}.lora_B.weight"] = mx.contiguous(b.T.astype(mx.float32))
        ranks[module] = a.shape[1]
    rank = Counter(ranks.values()).most_common(1)[0][0]
    others = {module: r for module, r in ranks.items() if r != rank}
    mx.save_safetensors(str(output / "adapter_model.safetensors"), tensors, metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": rank, "lora_alpha": adapter.scale * rank, "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted({module.rsplit(".", 1)[-1] for module in ranks}), "fan_in_fan_out": False,
        "inference_mode": True, "rank_pattern": others,
        "alpha_pattern": {module: adapter.scale * r for module, r in others.items()},
    }
    write_json_atomic(output / "adapter_config.json", config)
    (output / "README.md").write_text(
        f"# {adapter.name} (PEFT LoRA)\n\nExported by locomlx from {adapter.path}. Base model: {base_model}.\n\n"
        f"```python\nfrom peft import PeftModel\nmodel = PeftModel.from_pretrained(base, {str(output)!r})\n```\n")
    return output
