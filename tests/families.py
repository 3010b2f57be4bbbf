"""Tiny random models of each dense mlx-lm family, built from mlx-lm's own classes with tests/tiny.py's tokenizer.

Each family keeps what makes it different from llama: fused projections (phi3), biases (qwen2), q/k norms
(qwen3, olmo2), sliding-window layers with rotating caches and 1+w norms (gemma3_text, with a window of 8
tokens so short prompts cross it), a multimodal wrapper (gemma3), and logit, embedding, attention and residual
multipliers (granite).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from tests import tiny

_COMMON = {"hidden_size": 64, "num_hidden_layers": 4, "intermediate_size": 96, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
           "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": tiny.EOS_ID}
_GEMMA3_TEXT = {**_COMMON, "model_type": "gemma3_text", "query_pre_attn_scalar": 16, "sliding_window": 8,
                "sliding_window_pattern": 2, "rope_local_base_freq": 10000.0}

FAMILIES: dict[str, dict] = {
    "llama": {**_COMMON, "model_type": "llama", "tie_word_embeddings": True},
    "mistral": {**_COMMON, "model_type": "mistral", "tie_word_embeddings": False},
    "qwen2": {**_COMMON, "model_type": "qwen2", "tie_word_embeddings": True},
    "qwen3": {**_COMMON, "model_type": "qwen3", "tie_word_embeddings": True},
    "olmo2": {**_COMMON, "model_type": "olmo2", "tie_word_embeddings": False},
    "phi3": {**_COMMON, "model_type": "phi3", "tie_word_embeddings": False},
    "granite": {**_COMMON, "model_type": "granite", "tie_word_embeddings": True, "logits_scaling": 4.0,
                "attention_multiplier": 0.2, "embedding_multiplier": 6.0, "residual_multiplier": 0.3,
                "attention_bias": False, "mlp_bias": False},
    "gemma3_text": _GEMMA3_TEXT,
    "gemma3": {"model_type": "gemma3", "text_config": dict(_GEMMA3_TEXT), "eos_token_id": tiny.EOS_ID},
}


def build_family(out_dir: Path, family: str, seed: int = 0, **overrides) -> Path:
    """Write an mlx-lm model directory of `family` (its config updated with `overrides`) with random weights
    and tests/tiny.py's tokenizer."""
    from mlx_lm.utils import _get_classes

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = tiny.train_tokenizer(out_dir)
    config = {**json.loads(json.dumps(FAMILIES[family])), **overrides}
    config["vocab_size"] = vocab
    if "text_config" in config:
        config["text_config"]["vocab_size"] = vocab
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    # Random norm weights (instead of ones or zeros) so a wrong norm convention shows in the logits.
    weights = {k: (mx.random.normal(v.shape) * 0.2 + (0.0 if "gemma" in family else 1.0)) if "norm" in k else v
               for k, v in weights.items()}
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights)
    (out_dir / "config.json").write_text(json.dumps(config))
    return out_dir


def module_of(family: str):
    from mlx_lm.utils import MODEL_REMAPPING

    kind = FAMILIES[family]["model_type"]
    return importlib.import_module(f"mlx_lm.models.{MODEL_REMAPPING.get(kind, kind)}")
