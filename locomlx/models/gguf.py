"""Convert a GGUF file (llama, qwen2 or gemma3 architecture) into an mlx-lm model directory, once.

Tensors are read with llama.cpp's own `gguf` package. Q4_0, Q4_1 and Q8_0 blocks are affine quantization
with 32 values per block, so they are repacked bit for bit into MLX's (weight, scales, biases) triples;
every other quantized type (the K-quants, Q5_0/Q5_1, ...) is dequantized by the `gguf` package and
re-quantized with MLX in groups of 32 at no fewer bits than the file had (4, 5, 6 or 8). Names are mapped to
the Hugging Face / mlx-lm layout and llama.cpp's storage conventions undone: its q/k row permutation for
llama, the 1 + w it stores for Gemma's norms, and Llama 3's `rope_freqs`, which become mlx-lm's `llama3`
rope scaling (the parameters are found by reproducing the stored frequencies). The tokenizer is rebuilt
from the metadata: GPT-2-style BPE here, SentencePiece (Llama 2, Gemma) with transformers' GGUF converter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
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
_GEMMA3_LAYER_NAMES = {
    **_LAYER_NAMES,
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class Architecture:
    """How llama.cpp stores one architecture, and the mlx-lm model type it becomes."""

    model_type: str
    hf_class: str  # transformers' class of the same model
    layer_names: dict
    permuted_qk: bool = False  # llama.cpp interleaves q/k rows for RoPE (llama only)
    norm_offset: float = 0.0  # llama.cpp stores norm weights plus this (Gemma: 1 + w)


ARCHITECTURES = {
    "llama": Architecture("llama", "LlamaForCausalLM", _LAYER_NAMES, permuted_qk=True),
    "qwen2": Architecture("qwen2", "Qwen2ForCausalLM", _LAYER_NAMES),
    "gemma3": Architecture("gemma3_text", "Gemma3ForCausalLM", _GEMMA3_LAYER_NAMES, norm_offset=1.0),
}

# Pre-tokenizer regexes by `tokenizer.ggml.pre`, as llama.cpp defines them.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS = {
    "default": [_GPT2_REGEX],
    "gpt-2": [_GPT2_REGEX],
    "smollm": [r"\p{N}", _GPT2_REGEX],
    "llama-bpe": [_LLAMA3_REGEX],
    "llama3": [_LLAMA3_REGEX],
    "qwen2": [_QWEN2_REGEX],
}

_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4


def _scalar(metadata: dict, key: str, default=None):
    if key not in metadata:
        if default is None:
            raise LocomlxError(f"GGUF metadata lacks '{key}'; the file is incomplete.")
        return default
    return metadata[key]


def read_gguf(path: Path):
    """(gguf.GGUFReader, metadata dict), turning the reader's errors into one readable line."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        metadata = {name: field.contents() for name, field in reader.fields.items()}
    except Exception as exc:  # the reader raises ValueError/struct.error/IndexError on bad bytes
        raise LocomlxError(f"Cannot read GGUF file {path}: {str(exc).strip() or type(exc).__name__}. The file is "
                           "corrupt or truncated; re-download it.") from exc
    return reader, metadata


# --- tensors --------------------------------------------------------------------------------------------

def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """MLX's packing of `bits`-bit integers (rows, cols) into uint32 words, lowest bits first."""
    per = 32 // bits
    q = q.astype(np.uint32).reshape(q.shape[0], -1, per)
    return (q << (np.arange(per, dtype=np.uint32) * bits)).sum(axis=-1, dtype=np.uint32)


def _affine_blocks(raw: np.ndarray, kind: str, rows: int) -> tuple[np.ndarray, ...]:
    """(packed weight, scales, biases, bits) of Q4_0 / Q4_1 / Q8_0 blocks, exactly as llama.cpp dequantizes them."""
    size = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}[kind]
    blocks = raw.reshape(rows, -1, size)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0]
    if kind == "Q8_0":  # w = d * q, q in -128..127 -> d * (q + 128) - 128 d
        q = blocks[..., 2:].copy().view(np.int8).astype(np.int16) + 128
        return _pack(q.reshape(rows, -1), 8), d, (-128 * d).astype(np.float16), 8
    nibbles = blocks[..., 4:] if kind == "Q4_1" else blocks[..., 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)  # elements 0..15 low nibbles, 16..31 high
    bias = blocks[..., 2:4].copy().view(np.float16)[..., 0] if kind == "Q4_1" else (-8 * d).astype(np.float16)
    return _pack(q.reshape(rows, -1), 4), d, bias, 4


# Bits MLX re-quantizes each other llama.cpp type to: never fewer than the file had.
_REQUANTIZED_BITS = {"Q2_K": 4, "Q3_K": 4, "Q4_K": 4, "IQ4_NL": 4, "IQ4_XS": 4, "Q5_0": 5, "Q5_1": 5, "Q5_K": 5,
                     "Q6_K": 6, "Q8_K": 8}


def _tensor(tensor) -> tuple[list[mx.array], int | None]:
    """([weight] or [weight, scales, biases], bits or None) for one GGUF tensor, rows = output features."""
    import gguf

    kind = tensor.tensor_type.name
    shape = [int(n) for n in reversed(tensor.shape)]  # GGUF lists the fastest-varying dimension first
    if kind in ("F32", "F16", "BF16"):
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type) if kind == "BF16" else tensor.data
        return [mx.array(np.asarray(data, dtype=np.float32 if kind != "F16" else np.float16).reshape(shape))], None
    if len(shape) != 2:
        raise LocomlxError(f"tensor '{tensor.name}' is {kind} with {len(shape)} dimensions; only matrices "
                           "can be quantized")
    if kind in ("Q4_0", "Q4_1", "Q8_0"):
        packed, scales, biases, bits = _affine_blocks(np.asarray(tensor.data), kind, shape[0])
        return [mx.array(packed), mx.array(scales), mx.array(biases)], bits
    if kind not in _REQUANTIZED_BITS:
        raise LocomlxError(f"tensor '{tensor.name}' has type {kind}, which locomlx cannot convert (known: F32, "
                           f"F16, BF16, Q4_0, Q4_1, Q8_0, {', '.join(_REQUANTIZED_BITS)}); re-quantize the file "
                           "with llama.cpp to Q4_K_M or Q8_0.")
    weight = mx.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape))
    bits = _REQUANTIZED_BITS[kind]
    return list(mx.quantize(weight, group_size=GROUP_SIZE, bits=bits)), bits


def _unpermute_rows(a: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's `permute()` of q/k rows (interleaved RoPE -> half-split RoPE).

    Rows are output features; quantization groups run along columns, so
    weight, scales and biases are all permuted the same way.
    """
    rows = a.shape[0]
    return a.reshape(n_heads, rows // n_heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _hf_name(gguf_name: str, arch: Architecture) -> str:
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in arch.layer_names:
        return f"model.layers.{parts[1]}.{arch.layer_names[parts[2]]}.{suffix}"
    raise LocomlxError(f"GGUF tensor '{gguf_name}' has no {arch.model_type} equivalent; this converter supports "
                       "dense llama, qwen2 and gemma3 models (no MoE). Use an MLX model from the hub instead.")


def _convert_tensors(reader, config: dict, arch: Architecture) -> tuple[dict[str, mx.array], dict | None]:
    """Rename, undo llama.cpp's conventions, and describe each quantized module's bits for mlx-lm."""
    weights: dict[str, mx.array] = {}
    quantization: dict = {"group_size": GROUP_SIZE, "bits": 4}
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            continue  # read by _rope_scaling
        hf = _hf_name(tensor.name, arch)
        parts, bits = _tensor(tensor)
        if arch.permuted_qk and (".self_attn.q_proj." in hf or ".self_attn.k_proj." in hf):
            heads = config["num_attention_heads"] if ".q_proj." in hf else config["num_key_value_heads"]
            parts = [_unpermute_rows(p, heads) for p in parts]
        if arch.norm_offset and hf.endswith("norm.weight"):
            parts = [parts[0].astype(mx.float32) - arch.norm_offset]
        module = hf.removesuffix(".weight")
        if bits is None:
            weights[hf] = parts[0]
        else:
            weights[hf], weights[f"{module}.scales"], weights[f"{module}.biases"] = parts
            quantization[module] = {"group_size": GROUP_SIZE, "bits": bits}
    return weights, (quantization if len(quantization) > 2 else None)


# --- config ---------------------------------------------------------------------------------------------

# Llama 3.x's published rope scaling settings; the stored frequencies say which one a file uses.
_LLAMA3_ROPE_CANDIDATES = [{"rope_type": "llama3", "factor": f, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192} for f in (8.0, 16.0, 32.0)]


def _rope_scaling(reader, config: dict) -> dict | None:
    """mlx-lm's `llama3` rope scaling that reproduces the file's `rope_freqs` (frequency divisors), if any."""
    from mlx_lm.models.rope_utils import Llama3RoPE

    stored = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if stored is None:
        return None
    factors = np.asarray(stored.data, dtype=np.float32).reshape(-1)
    dims, base = config["head_dim"], config["rope_theta"]
    plain = base ** (np.arange(0, dims, 2) / dims)
    for candidate in _LLAMA3_ROPE_CANDIDATES:
        rope = Llama3RoPE(dims, config["max_position_embeddings"], False, base, candidate)
        if rope._freqs.shape[0] == factors.shape[0] and np.allclose(np.array(rope._freqs) / plain, factors,
                                                                     rtol=1e-3):
            return candidate
    raise LocomlxError("the file's rope_freqs match none of Llama 3's rope scaling settings "
                       f"(factor 8, 16 or 32 from 8192 positions); its first divisors are {factors[:4].tolist()}. "
                       "Use the model's MLX version from the hub instead.")


def _model_config(reader, metadata: dict, tied: bool) -> tuple[dict, Architecture]:
    name = _scalar(metadata, "general.architecture")
    if name not in ARCHITECTURES:
        raise LocomlxError(
            f"GGUF architecture '{name}' is not supported (known: {', '.join(ARCHITECTURES)}). Use an MLX model "
            "directory or hub repo, or convert the original checkpoint with `mlx_lm.convert -q --hf-path REPO`."
        )
    arch = ARCHITECTURES[name]

    def key(suffix, default=None):
        return _scalar(metadata, f"{name}.{suffix}", default)

    hidden = int(key("embedding_length"))
    heads = int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", key("rope.dimension_count", hidden // heads)))
    n_vocab = len(metadata.get("tokenizer.ggml.tokens", []))
    config = {
        "model_type": arch.model_type,
        "architectures": [arch.hf_class],
        "hidden_size": hidden,
        "num_hidden_layers": int(key("block_count")),
        "intermediate_size": int(key("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(key("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(key("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(key("context_length", 2048)),
        "vocab_size": int(key("vocab_size", n_vocab)),
        "tie_word_embeddings": tied,
        "bos_token_id": int(_scalar(metadata, "tokenizer.ggml.bos_token_id", -1)),
        "eos_token_id": int(_scalar(metadata, "tokenizer.ggml.eos_token_id", -1)),
    }
    if name == "llama":
        config["rope_traditional"] = False
        config["rope_scaling"] = _rope_scaling(reader, config)
    if name == "gemma3":
        # llama.cpp fixes these for Gemma 3 rather than storing them: every 6th layer is global, the
        # local layers' RoPE base is 10000, and queries are scaled by the head size.
        config.update(sliding_window=int(key("attention.sliding_window", 512)), sliding_window_pattern=6,
                      rope_local_base_freq=10000.0, query_pre_attn_scalar=head_dim)
        factor = key("rope.scaling.factor", 0.0)
        if factor and float(factor) != 1.0:
            config["rope_scaling"] = {"rope_type": "linear", "factor": float(factor)}
    return {k: v for k, v in config.items() if v is not None}, arch


def _sentencepiece_json(gguf_path: Path, metadata: dict) -> str:
    """A SentencePiece vocabulary (Llama 2, Gemma) as `tokenizer.json`, built by transformers' GGUF converter,
    which starts every text with the BOS token when the file says llama.cpp adds one."""
    from tokenizers import processors
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer

    architecture, tokenizer_dict, tokenizer_config = get_gguf_tokenizer(str(gguf_path))
    backend, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
    bos = tokenizer_config.get("bos_token")
    if bos and _scalar(metadata, "tokenizer.ggml.add_bos_token", False):
        bos_id = int(metadata["tokenizer.ggml.bos_token_id"])
        backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                               special_tokens=[(bos, bos_id)])
    return backend.to_str()


def _tokenizer_json(gguf_path: Path, metadata: dict) -> str:
    model = _scalar(metadata, "tokenizer.ggml.model")
    if model == "llama":
        return _sentencepiece_json(gguf_path, metadata)
    if model != "gpt2":
        raise LocomlxError(
            f"GGUF tokenizer type '{model}' is not supported (known: BPE 'gpt2', SentencePiece 'llama'). "
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
    return json.dumps({
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
    }, ensure_ascii=False)


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
    reader, metadata = read_gguf(gguf_path)
    try:
        tied = not any(t.name == "output.weight" for t in reader.tensors)
        config, arch = _model_config(reader, metadata, tied)
        weights, quantization = _convert_tensors(reader, config, arch)
        tokenizer_json = _tokenizer_json(gguf_path, metadata)
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
        (tmp / "tokenizer.json").write_text(tokenizer_json)
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(_tokenizer_config(metadata, config), indent=2, ensure_ascii=False))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
