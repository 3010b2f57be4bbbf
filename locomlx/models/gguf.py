"""Convert a llama-architecture GGUF file into an mlx-lm model directory, once.

`mlx.core.load` reads GGUF directly: Q4_0/Q4_1/Q8_0 tensors arrive as MLX
affine-quantized triples (weight, scales, biases; group size 32) and F16/F32
tensors as plain arrays. We keep quantized tensors quantized, rename them to
the Hugging Face / mlx-lm layout, undo llama.cpp's q/k row permutation (so the
result is the same model a Hugging Face checkpoint gives, and LoRA adapters
trained on either line up), and rebuild the tokenizer and chat template from
the GGUF metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from locomlx.errors import LocomlxError
from locomlx.provenance import file_sha256

import mlx.core as mx
import numpy as np

GROUP_SIZE = 32

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# Pre-tokenizer regexes by `tokenizer.ggml.pre`, as llama.cpp defines them.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS = {
    "default": [_GPT2_REGEX],
    "gpt-2": [_GPT2_REGEX],
    "smollm": [r"\p{N}", _GPT2_REGEX],
    "llama-bpe": [_LLAMA3_REGEX],
    "llama3": [_LLAMA3_REGEX],
}

_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4


def _scalar(metadata: dict, key: str, default=None):
    if key not in metadata:
        if default is None:
            raise LocomlxError(f"GGUF metadata lacks '{key}'; the file is incomplete or not a llama model.")
        return default
    value = metadata[key]
    return value.item() if isinstance(value, mx.array) else value


def read_gguf(path: Path) -> tuple[dict[str, mx.array], dict]:
    """Load tensors and metadata, turning MLX's loader errors into one readable line."""
    try:
        return mx.load(str(path), return_metadata=True)
    except Exception as exc:  # MLX raises RuntimeError/ValueError with C++ text
        raise LocomlxError(
            f"Cannot read GGUF file {path}: {str(exc).strip()}. The file is corrupt or truncated, or uses a "
            "tensor type MLX cannot load (supported: F32, F16, Q4_0, Q4_1, Q8_0). Re-download it, or re-quantize "
            "it with llama.cpp to Q4_0/Q4_1/Q8_0."
        ) from exc


def _unpermute_rows(a: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's `permute()` of q/k rows (interleaved RoPE -> half-split RoPE).

    Rows are output features; quantization groups run along columns, so
    weight, scales and biases are all permuted the same way.
    """
    rows = a.shape[0]
    return a.reshape(n_heads, rows // n_heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _hf_name(gguf_name: str) -> str:
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    raise LocomlxError(
        f"GGUF tensor '{gguf_name}' has no llama equivalent; this converter supports plain llama models "
        "(no rope_freqs, no biases, no MoE). Use an MLX model from the hub instead."
    )


def _model_config(metadata: dict, n_vocab: int, tied: bool) -> dict:
    arch = _scalar(metadata, "general.architecture")
    if arch != "llama":
        raise LocomlxError(
            f"GGUF architecture '{arch}' is not supported (only 'llama'). Use an MLX model directory or hub repo, "
            "or convert the original checkpoint with `mlx_lm.convert -q --hf-path REPO`."
        )
    hidden = int(_scalar(metadata, "llama.embedding_length"))
    heads = int(_scalar(metadata, "llama.attention.head_count"))
    head_dim = int(_scalar(metadata, "llama.rope.dimension_count", hidden // heads))
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(metadata, "llama.block_count")),
        "intermediate_size": int(_scalar(metadata, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_scalar(metadata, "llama.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(_scalar(metadata, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_scalar(metadata, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(metadata, "llama.context_length", 2048)),
        "vocab_size": int(_scalar(metadata, "llama.vocab_size", n_vocab)),
        "tie_word_embeddings": tied,
        "rope_traditional": False,
        "bos_token_id": int(_scalar(metadata, "tokenizer.ggml.bos_token_id", -1)),
        "eos_token_id": int(_scalar(metadata, "tokenizer.ggml.eos_token_id", -1)),
    }


def _convert_tensors(tensors: dict[str, mx.array], config: dict) -> tuple[dict[str, mx.array], dict]:
    """Rename, un-permute q/k, and describe each quantized module's bits for mlx-lm."""
    weights: dict[str, mx.array] = {}
    for name, value in tensors.items():
        if name == "rope_freqs.weight":
            raise LocomlxError("GGUF file uses llama-3 rope scaling (rope_freqs), "
                               "which this converter does not support yet.")
        hf = _hf_name(name)
        if ".self_attn.q_proj." in hf or ".self_attn.k_proj." in hf:
            heads = config["num_attention_heads"] if ".q_proj." in hf else config["num_key_value_heads"]
            value = _unpermute_rows(value, heads)
        weights[hf] = value

    quantization: dict = {"group_size": GROUP_SIZE, "bits": 4}
    for name, value in weights.items():
        if name.endswith(".scales"):
            module = name[: -len(".scales")]
            packed_cols = weights[f"{module}.weight"].shape[1]
            in_dims = value.shape[1] * GROUP_SIZE
            quantization[module] = {"group_size": GROUP_SIZE, "bits": packed_cols * 32 // in_dims}
    has_quantized = len(quantization) > 2
    return weights, (quantization if has_quantized else None)


def _tokenizer_json(metadata: dict) -> dict:
    model = _scalar(metadata, "tokenizer.ggml.model")
    if model != "gpt2":
        raise LocomlxError(
            f"GGUF tokenizer type '{model}' is not supported (only BPE 'gpt2' tokenizers). "
            "Use the model's MLX version from the hub instead."
        )
    tokens = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    token_types = (np.array(metadata["tokenizer.ggml.token_type"]).tolist()
                   if "tokenizer.ggml.token_type" in metadata else [])
    pre = _scalar(metadata, "tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise LocomlxError(
            f"GGUF pre-tokenizer '{pre}' is not supported (known: {', '.join(sorted(_PRE_TOKENIZERS))}). "
            "Use the model's MLX version from the hub instead."
        )
    splits = [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
        for regex in _PRE_TOKENIZERS[pre]
    ]
    added = [
        {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, kind in enumerate(token_types)
        if kind in (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": splits + [
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": [list(m) for m in merges],
        },
    }


def _tokenizer_config(metadata: dict, config: dict) -> dict:
    tokens = metadata["tokenizer.ggml.tokens"]

    def token(key: str):
        idx = int(_scalar(metadata, key, -1))
        return tokens[idx] if 0 <= idx < len(tokens) else None

    result = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": bool(_scalar(metadata, "tokenizer.ggml.add_bos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    if "tokenizer.chat_template" in metadata:
        result["chat_template"] = metadata["tokenizer.chat_template"]
    return {k: v for k, v in result.items() if v is not None}


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write an mlx-lm model directory for `gguf_path` at `out_dir` (atomically) and return it."""
    tensors, metadata = read_gguf(gguf_path)
    try:
        n_vocab = len(metadata.get("tokenizer.ggml.tokens", []))
        config = _model_config(metadata, n_vocab, tied="output.weight" not in tensors)
        weights, quantization = _convert_tensors(tensors, config)
        tokenizer_json = _tokenizer_json(metadata)
    except LocomlxError as exc:
        raise LocomlxError(f"{gguf_path}: {exc}") from exc
    if quantization:
        config["quantization"] = quantization
    source = {"gguf_path": str(gguf_path.resolve()), "gguf_sha256": file_sha256(gguf_path),
              "name": str(_scalar(metadata, "general.name", gguf_path.stem))}
    config["locomlx_source"] = source

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(_tokenizer_config(metadata, config), indent=2, ensure_ascii=False))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
