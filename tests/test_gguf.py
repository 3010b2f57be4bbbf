"""GGUF -> mlx-lm conversion: same logits as llama.cpp's own dequantization, same tokenizer."""

import json

from locomlx.errors import LocomlxError
from locomlx.models.gguf import convert_gguf
from locomlx.models.load import load_base
from locomlx.models.resolve import resolve_model

import mlx.core as mx
import numpy as np
import pytest

from tests import families, tiny

PROMPT = "the cat sat on the mat 123 ."


def _reference_logits(model_dir, weights, tokens):
    from mlx_lm.utils import load_model

    model, _ = load_model(model_dir)
    model.load_weights([(k, mx.array(v)) for k, v in weights.items()])
    return np.array(model(mx.array([tokens]))[0, -1])


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"])
def test_conversion_matches_llama_cpp_dequantization(tiny_model, tmp_path, qtype):
    gguf_path = tmp_path / f"tiny-{qtype}.gguf"
    reference_weights = tiny.write_gguf(tiny_model, gguf_path, qtype)
    base = load_base(resolve_model(str(gguf_path)), compute_dtype="float32")
    tokens = base.tokenizer.encode(PROMPT)
    ours = np.array(base.model(mx.array([tokens]))[0, -1])
    ref = _reference_logits(tiny_model, reference_weights, tokens)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert ours.argmax() == ref.argmax()


@pytest.mark.parametrize("qtype,bits", [("Q4_0", 4), ("Q4_1", 4), ("Q8_0", 8)])
def test_quantized_tensors_stay_quantized(tiny_model, tmp_path, qtype, bits):
    gguf_path = tmp_path / f"tiny-{qtype}.gguf"
    tiny.write_gguf(tiny_model, gguf_path, qtype)
    out = convert_gguf(gguf_path, tmp_path / "converted")
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["model.layers.0.self_attn.q_proj"] == {"group_size": 32, "bits": bits}
    weights = mx.load(str(out / "model.safetensors"))
    assert weights["model.layers.0.mlp.up_proj.weight"].dtype == mx.uint32
    assert "model.layers.0.mlp.up_proj.scales" in weights
    # The 4-bit compute path gives the same next token as the float32 path.
    tokens = load_base(resolve_model(str(out)), "quantized").tokenizer.encode(PROMPT)
    q = load_base(resolve_model(str(out)), "quantized").model(mx.array([tokens]))[0, -1]
    f = load_base(resolve_model(str(out)), "float32").model(mx.array([tokens]))[0, -1]
    np.testing.assert_allclose(np.array(q.astype(mx.float32)), np.array(f), atol=5e-2)


def test_tokenizer_and_chat_template_rebuilt_from_metadata(tiny_model, tmp_path):
    from mlx_lm.utils import load_tokenizer

    gguf_path = tmp_path / "tiny.gguf"
    tiny.write_gguf(tiny_model, gguf_path, "Q8_0")
    converted = load_tokenizer(resolve_model(str(gguf_path)).path)
    original = load_tokenizer(tiny_model)
    for text in tiny.corpus(50, seed=7) + ["Hello,  world!\n\n  spaces 42", "<|im_start|>user\nhi<|im_end|>"]:
        assert converted.encode(text) == original.encode(text), text
        assert converted.decode(converted.encode(text)) == text
    messages = [{"role": "user", "content": "what is the capital of france?"}]
    assert converted.apply_chat_template(messages, add_generation_prompt=True) == original.apply_chat_template(
        messages, add_generation_prompt=True)
    assert tiny.EOS_ID in converted.eos_token_ids


def test_conversion_is_cached(tiny_model, tmp_path):
    gguf_path = tmp_path / "tiny.gguf"
    tiny.write_gguf(tiny_model, gguf_path, "Q4_1")
    calls = []
    first = resolve_model(str(gguf_path), on_convert=lambda *a: calls.append(a))
    second = resolve_model(str(gguf_path), on_convert=lambda *a: calls.append(a))
    assert first.path == second.path and len(calls) == 1
    assert first.source_hash and len(first.source_hash) == 64


def test_corrupt_gguf_is_one_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(LocomlxError, match="Cannot read GGUF file .*broken.gguf.*corrupt or truncated"):
        resolve_model(str(bad))


def test_gguf_without_model_metadata_names_file_and_key(tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 16)
    with pytest.raises(LocomlxError, match="empty.gguf: GGUF metadata lacks 'general.architecture'"):
        resolve_model(str(empty))


def test_truncated_gguf_is_one_clear_error(tiny_model, tmp_path):
    good = tmp_path / "good.gguf"
    tiny.write_gguf(tiny_model, good, "Q4_0")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(LocomlxError, match="corrupt or truncated"):
        resolve_model(str(cut))


def test_unsupported_architecture_is_refused(tmp_path):
    import gguf

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LocomlxError, match="architecture 'gpt2' is not supported"):
        resolve_model(str(path))


# --- architectures beyond llama, K-quants and Llama 3 rope scaling ----------------------------------------

def _converted_and_reference(model_dir, gguf_path, reference_weights, prompt=PROMPT):
    base = load_base(resolve_model(str(gguf_path)), compute_dtype="float32")
    tokens = base.tokenizer.encode(prompt)
    ours = np.array(base.model(mx.array([tokens]))[0, -1])
    return ours, _reference_logits(model_dir, reference_weights, tokens), base


@pytest.mark.parametrize("family,overrides", [
    ("qwen2", {}),  # q/k/v biases, no row permutation
    # Gemma 3's layout: five local layers of a short window, then a global one; norms stored as 1 + w.
    ("gemma3_text", {"num_hidden_layers": 6, "sliding_window": 4, "sliding_window_pattern": 6}),
])
@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_1"])
def test_other_architectures_match_the_gguf_dequantizer(tmp_path, family, overrides, qtype):
    model_dir = families.build_family(tmp_path / family, family, seed=3, **overrides)
    gguf_path = tmp_path / f"{family}-{qtype}.gguf"
    reference_weights = tiny.write_gguf(model_dir, gguf_path, qtype)
    ours, ref, base = _converted_and_reference(model_dir, gguf_path, reference_weights)
    assert base.config["model_type"] == families.FAMILIES[family]["model_type"]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_llama3_rope_freqs_become_llama3_rope_scaling(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    model_dir = families.build_family(tmp_path / "llama3", "llama", seed=4, rope_scaling=scaling)
    freqs = tiny.llama3_rope_freqs(16, 10000.0, scaling)
    assert len(set(freqs.round(4).tolist())) == 3  # short, smoothed and stretched wavelengths all occur
    gguf_path = tmp_path / "llama3.gguf"
    reference_weights = tiny.write_gguf(model_dir, gguf_path, "Q8_0", rope_freqs=freqs)
    ours, ref, base = _converted_and_reference(model_dir, gguf_path, reference_weights, PROMPT * 6)
    assert base.config["rope_scaling"] == scaling
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_rope_freqs_of_no_llama3_setting_are_refused(tmp_path):
    model_dir = families.build_family(tmp_path / "llama", "llama", seed=4)
    freqs = tiny.llama3_rope_freqs(16, 10000.0, {"factor": 3.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 8192})
    gguf_path = tmp_path / "odd-rope.gguf"
    tiny.write_gguf(model_dir, gguf_path, "Q8_0", rope_freqs=freqs)
    with pytest.raises(LocomlxError, match="odd-rope.gguf: the file's rope_freqs match none of Llama 3"):
        resolve_model(str(gguf_path))


# Q4_K_M's mix: 4-bit K blocks for most matrices, 6-bit for some, Q5_0 and Q8_0 where llama.cpp keeps them.
_K_MIX = {"q_proj": "Q4_K", "k_proj": "Q4_K", "v_proj": "Q5_0", "o_proj": "Q5_K", "gate_proj": "Q4_K",
          "up_proj": "Q4_K", "down_proj": "Q6_K", "embed_tokens": "Q8_0"}
_K_BITS = {"Q4_K": 4, "Q5_0": 5, "Q5_K": 5, "Q6_K": 6, "Q8_0": 8}


def test_k_quants_are_requantized_at_no_fewer_bits(tmp_path):
    # K-quant blocks hold 256 values: rows of 256.
    model_dir = families.build_family(tmp_path / "qwen2", "qwen2", seed=5, hidden_size=256, intermediate_size=256,
                                      num_attention_heads=8, num_key_value_heads=4, head_dim=32)
    gguf_path = tmp_path / "qwen2-k.gguf"
    reference_weights = tiny.write_gguf(model_dir, gguf_path, "F32", types=_K_MIX)
    out = convert_gguf(gguf_path, tmp_path / "converted")
    config = json.loads((out / "config.json").read_text())
    weights = mx.load(str(out / "model.safetensors"))
    for name, reference in reference_weights.items():
        module, leaf = name.removesuffix(".weight"), name.rsplit(".", 2)[-2]
        if leaf not in _K_MIX or not name.endswith(".weight"):
            continue
        bits = _K_BITS[_K_MIX[leaf]]
        assert config["quantization"][module] == {"group_size": 32, "bits": bits}, module
        scales = weights[f"{module}.scales"]
        ours = mx.dequantize(weights[name], scales, weights[f"{module}.biases"], group_size=32, bits=bits)
        # Within one step of MLX's grid of llama.cpp's own dequantization, element by element (MLX's quantizer
        # keeps zero exact, so its rounding error reaches up to a whole step, measured 0.94 of one).
        step = np.abs(np.repeat(np.array(scales.astype(mx.float32)), 32, axis=1))  # MLX may flip the sign
        assert np.all(np.abs(np.array(ours.astype(mx.float32)) - reference) <= step * 1.0001 + 1e-6), module
    ours, ref, _ = _converted_and_reference(model_dir, gguf_path, reference_weights)
    assert np.corrcoef(ours, ref)[0, 1] > 0.99


def test_a_tensor_type_locomlx_cannot_convert_is_named(tmp_path):
    model_dir = families.build_family(tmp_path / "qwen2", "qwen2", seed=5, hidden_size=256, intermediate_size=256,
                                      num_attention_heads=8, num_key_value_heads=4, head_dim=32)
    gguf_path = tmp_path / "ternary.gguf"
    tiny.write_gguf(model_dir, gguf_path, "F32", types={"up_proj": "TQ2_0"})
    with pytest.raises(LocomlxError, match=r"ternary.gguf: tensor 'blk.\d.ffn_up.weight' has type TQ2_0, which "
                                           r"locomlx cannot convert.*Q4_K_M or Q8_0"):
        resolve_model(str(gguf_path))
