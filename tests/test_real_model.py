"""Integration tests on the real embedded model, SmolLM2-135M-Instruct (4-bit GGUF from PyPI)."""

import json

import pytest
from click.testing import CliRunner

from locomlx.cli import main

pytestmark = pytest.mark.real


def test_base_answers_capital_of_france(real_engine):
    result = real_engine.generate([{"role": "user", "content": "What is the capital of France?"}], max_tokens=24)
    assert "Paris" in result.text
    assert result.finish_reason == "stop"


def test_converted_model_keeps_4bit_weights_and_chat_template(real_engine):
    config = json.loads((real_engine.base.resolved.path / "config.json").read_text())
    assert config["quantization"]["model.layers.0.self_attn.q_proj"]["bits"] == 4
    assert config["num_hidden_layers"] == 30 and config["tie_word_embeddings"]
    prompt = real_engine.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                                       tokenize=False)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_tokenizer_matches_smollm2_pre_tokenization(real_engine):
    tok = real_engine.tokenizer
    assert len(tok.encode("12345", add_special_tokens=False)) == 5  # SmolLM2 splits digits one by one
    assert tok.encode("<|im_start|>", add_special_tokens=False) == [1]
    text = "Héllo, wörld!  Tabs\tand\nnewlines 3.14"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_default_cpu_path_is_float32(real_engine):
    from locomlx.models.load import device_kind

    if device_kind() == "cpu":
        assert real_engine.base.compute_dtype == "float32"


def test_cli_one_shot_on_real_model(real_model):
    result = CliRunner().invoke(main, ["chat", "--adapter", "none", "--max-tokens", "24", "What is the capital of France?"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output
    assert result.output.strip().splitlines()[-1].startswith("[adapter: none (base model)")
