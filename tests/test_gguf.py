"""GGUF -> mlx-lm conversion: same logits as llama.cpp's own dequantization, same tokenizer."""

import json

from locomlx.errors import LocomlxError
from locomlx.models.gguf import convert_gguf
from locomlx.models.load import load_base
from locomlx.models.resolve import resolve_model

import mlx.core as mx
import numpy as np
import pytest

from tests import tiny

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
