"""Build a tiny llama model locally: random weights, a BPE tokenizer trained here, a chat template.

Used by the fast tests in place of the real model; everything is made from
scratch in a temporary folder, so no test touches the network.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_ID = 2  # <|im_end|>, as in SmolLM2

CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
    "rope_traditional": False,
    "bos_token_id": 1,
    "eos_token_id": EOS_ID,
}

_WORDS = ("the a cat dog sat on mat paris france capital city review film great terrible boring loved "
          "answer question sum of two and is what yes no positive negative spam email free money win "
          "hello world model adapter router swarm laptop student learn train data").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
        lines.append(" ".join(words) + rng.choice([".", "?", "!", f" {rng.randint(0, 999)}."]))
    return lines


def train_tokenizer(out_dir: Path, vocab_size: int = 320) -> int:
    """Train a byte-level BPE tokenizer (GPT-2 style) and write tokenizer files; returns the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": CONFIG["max_position_embeddings"],
    }))
    return tokenizer.get_vocab_size()


def build_model(out_dir: Path, seed: int = 0, quantize_bits: int | None = None) -> Path:
    """Write an mlx-lm model directory with random weights (optionally 4/8-bit quantized)."""
    from mlx_lm.models.llama import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(CONFIG, vocab_size=train_tokenizer(out_dir))
    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))
    if quantize_bits:
        nn.quantize(model, group_size=32, bits=quantize_bits)
        config["quantization"] = {"group_size": 32, "bits": quantize_bits}
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights)
    (out_dir / "config.json").write_text(json.dumps(config))
    return out_dir


def make_adapter(out_dir: Path, model_dir: Path, rank: int, scale: float = 2.0,
                 keys=("self_attn.q_proj", "self_attn.v_proj"),
                 num_layers: int | None = None, layout: str = "mlx", seed: int = 1,
                 weights_file: str = "adapter_model.safetensors") -> Path:
    """Write a LoRA adapter with random non-zero a and b for the model at `model_dir`."""
    config = json.loads((model_dir / "config.json").read_text())
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * config.get("head_dim", hidden // config["num_attention_heads"])
    dims = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, kv), "self_attn.v_proj": (hidden, kv),
            "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter),
            "mlp.down_proj": (inter, hidden)}
    n_layers = config["num_hidden_layers"]
    num_layers = num_layers or n_layers
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(n_layers - num_layers, n_layers):
        for key in keys:
            d_in, d_out = dims[key]
            a = rng.normal(0, 0.3, (d_in, rank)).astype(np.float32)
            b = rng.normal(0, 0.3, (rank, d_out)).astype(np.float32)
            module = f"model.layers.{layer}.{key}"
            if layout == "mlx":
                tensors[f"{module}.lora_a"], tensors[f"{module}.lora_b"] = a, b
            else:
                tensors[f"base_model.model.{module}.lora_A.weight"] = a.T.copy()
                tensors[f"base_model.model.{module}.lora_B.weight"] = b.T.copy()
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / weights_file), {k: mx.array(v) for k, v in tensors.items()})
    if layout == "mlx":
        adapter_config = {"fine_tune_type": "lora", "num_layers": num_layers,
                          "lora_parameters": {"rank": rank, "scale": scale, "dropout": 0.0, "keys": list(keys)}}
    else:
        adapter_config = {"peft_type": "LORA", "r": rank, "lora_alpha": scale * rank,
                          "target_modules": [k.split(".")[-1] for k in keys]}
    (out_dir / "adapter_config.json").write_text(json.dumps(adapter_config))
    return out_dir


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute(): half-split RoPE rows -> interleaved."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
# llama.cpp's names for Gemma 3's four norms per block and its q/k norms.
_GEMMA3_GGUF_NAMES = {**_GGUF_NAMES, "post_attention_layernorm": "post_attention_norm",
                      "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
                      "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
_GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3"}


def random_kquant(rows: int, cols: int, qtype, rng) -> np.ndarray:
    """Random but well-formed blocks of a K-quant type, which the `gguf` package can only dequantize: random
    bytes with the block's float16 super-scales set to small values (random ones could be inf or NaN)."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale_at = {"Q6_K": [size - 2]}.get(qtype.name, [0, 2])  # Q6_K keeps d last; the others d, dmin first
    for offset in scale_at:
        raw[..., offset:offset + 2] = np.float16(rng.uniform(0.002, 0.01, raw.shape[:2])).view(np.uint8).reshape(
            *raw.shape[:2], 2)
    return raw.reshape(rows, -1)


def llama3_rope_freqs(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    """llama.cpp's `rope_freqs` for Llama 3 rope scaling: per frequency, the factor its wavelength is
    stretched by (1 for short wavelengths, `factor` for long ones, smoothed between)."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    out = []
    for freq in freqs:
        wavelen = 2 * np.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(model_dir: Path, out_path: Path, qtype_name: str, types: dict[str, str] | None = None,
               rope_freqs: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the float model at `model_dir` (llama, qwen2 or gemma3_text) as llama.cpp stores it, its matrices
    of type `qtype_name`, or of `types[leaf]` for the modules named there (e.g. {"q_proj": "Q4_K"}).

    Returns the Hugging-Face-layout weights as llama.cpp's own (de)quantizer sees them: the reference a
    faithful conversion must reproduce. K-quant matrices, which the `gguf` package cannot quantize, are
    random well-formed blocks, and their dequantization is the reference weight.
    """
    import gguf

    config = json.loads((model_dir / "config.json").read_text())
    arch = _GGUF_ARCH[config["model_type"]]
    names = _GEMMA3_GGUF_NAMES if arch == "gemma3" else _GGUF_NAMES
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    weights = {k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(model_dir / "model.safetensors")).items()}
    rng = np.random.default_rng(seed)

    writer = gguf.GGUFWriter(str(out_path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    writer.add_rope_dimension_count(config["head_dim"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    if arch == "gemma3":
        writer.add_sliding_window(config["sliding_window"])
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda kv: kv[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in SPECIAL_TOKENS else 1 for t, _ in vocab])
    merges = tokenizer["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(0)
    writer.add_chat_template(CHAT_TEMPLATE)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))

    reference = {}
    for name, w in weights.items():
        hf, _, suffix = name.rpartition(".")
        if hf == "model.embed_tokens":
            gguf_name = "token_embd"
        elif hf == "model.norm":
            gguf_name = "output_norm"
        elif hf == "lm_head":
            gguf_name = "output"
        else:
            _, _, layer, module = hf.split(".", 3)
            gguf_name = f"blk.{layer}.{names[module]}"
        gguf_name = f"{gguf_name}.{suffix}"
        permute = arch == "llama" and suffix == "weight"
        if permute and module_is(hf, "q_proj"):
            w_stored = _llama_cpp_permute(w, config["num_attention_heads"])
        elif permute and module_is(hf, "k_proj"):
            w_stored = _llama_cpp_permute(w, config["num_key_value_heads"])
        else:
            w_stored = w
        kind = (types or {}).get(hf.rpartition(".")[2], qtype_name)
        if w.ndim == 1:
            stored = w + 1.0 if arch == "gemma3" and hf.endswith("norm") else w  # llama.cpp stores Gemma's 1 + w
            writer.add_tensor(gguf_name, stored.astype(np.float32))
            reference[name] = w
        elif kind in ("F32", "F16"):
            dtype = np.float32 if kind == "F32" else np.float16
            writer.add_tensor(gguf_name, w_stored.astype(dtype))
            reference[name] = w.astype(dtype).astype(np.float32)
        elif kind.endswith("_K"):
            assert not permute or not module_is(hf, ("q_proj", "k_proj")), "random K-quant q/k need no permute"
            qtype = gguf.GGMLQuantizationType[kind]
            raw = random_kquant(*w.shape, qtype, rng)
            writer.add_tensor(gguf_name, raw, raw_dtype=qtype)
            reference[name] = gguf.quants.dequantize(raw, qtype).reshape(w.shape)
        else:
            qtype = gguf.GGMLQuantizationType[kind]
            writer.add_tensor(gguf_name, gguf.quants.quantize(w_stored, qtype), raw_dtype=qtype)
            # Blocks run along rows, so quantizing commutes with the row permutation: the
            # reference needs no un-permuting of its own.
            reference[name] = gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).reshape(w.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return reference


def module_is(hf_name: str, leaf: str | tuple[str, ...]) -> bool:
    leaves = (leaf,) if isinstance(leaf, str) else leaf
    return any(hf_name.endswith(f".{one}") for one in leaves)



_NOUNS = ("film plot acting soundtrack ending script director cast camera work dialogue pacing story score "
          "finale villain hero sequel premise editing visuals humour romance costume lighting").split()
_POSITIVE = "brilliant wonderful moving delightful superb charming gripping beautiful clever joyful".split()
_NEGATIVE = "dull awful tedious clumsy boring dreadful lifeless messy shallow annoying".split()
_TEMPLATES = ("The {n} was {a}.", "I found the {n} {a}.", "Honestly, the {n} felt {a}.", "What a {a} {n}!")
SENTIMENT_INSTRUCTION = "Classify the sentiment of this review. Answer with one word: positive or negative."


def sentiment_examples(n: int, seed: int, templates=_TEMPLATES, skip: int = 0) -> list[dict]:
    """Distinct synthetic one-line reviews labelled positive/negative (balanced, deterministic).

    `skip` leaves out the first examples of the same shuffled pool, so disjoint sets come from one seed.
    """
    pools = {}
    for label, adjectives in (("positive", _POSITIVE), ("negative", _NEGATIVE)):
        pool = [t.format(n=noun, a=adj) for t in templates for noun in _NOUNS for adj in adjectives]
        random.Random(seed).shuffle(pool)
        pools[label] = pool[skip // 2:]
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        rows.append({"instruction": SENTIMENT_INSTRUCTION, "input": pools[label][i // 2], "output": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
