"""Integration tests on the real embedded model, SmolLM2-135M-Instruct (4-bit GGUF from PyPI)."""

import json

from locomlx.cli import main

import pytest
from click.testing import CliRunner

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
    result = CliRunner().invoke(main, ["chat", "--adapter", "none", "--max-tokens", "24",
                                       "What is the capital of France?"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output
    assert result.output.strip().splitlines()[-1].startswith("[adapter: none (base model)")


def test_training_a_real_adapter_changes_behaviour_on_held_out_examples(real_model, tmp_path):
    """500+ examples on SmolLM2-135M in minutes; judged by `locomlx eval` on unseen reviews, not by loss."""
    from locomlx.eval.evaluate import evaluate_adapter, format_report
    from locomlx.eval.run import InferenceConfig
    from locomlx.train.config import load_config
    from locomlx.train.trainer import train

    from tests import tiny

    # A label vocabulary of its own (yay/nay), so the base model cannot already do the task.
    def relabel(rows):
        words = {"positive": "yay", "negative": "nay"}
        return [dict(r, instruction="Is this review positive or negative? Reply yay if positive, nay if negative.",
                     output=words[r["output"]]) for r in rows]

    train_file = tiny.write_jsonl(tmp_path / "data" / "train.jsonl", relabel(tiny.sentiment_examples(520, 1)))
    bench_file = tiny.write_jsonl(tmp_path / "data" / "benchmark.jsonl",
                                  relabel(tiny.sentiment_examples(60, 1, skip=700)))
    geography = [{"instruction": f"What is the capital of {country}?", "input": "", "output": city}
                 for country, city in [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Spain", "Madrid"),
                                       ("Germany", "Berlin")] * 10]
    tiny.write_jsonl(tmp_path / "library" / "geography" / "eval" / "benchmark.jsonl",
                     [dict(row, input=f"(question {i})") for i, row in enumerate(geography)])
    config = load_config(None, {"dataset": str(train_file), "benchmark": str(bench_file),
                                "output": str(tmp_path / "library" / "sentiment"), "epochs": 1, "lora_rank": 8,
                                "max_seq_length": 128, "steps_per_eval": 40, "adapters_dir": str(tmp_path / "library")})
    result = train(config)
    assert result.state.train_seconds < 600

    evaluation = evaluate_adapter(result.output, tmp_path / "library", inference=InferenceConfig(max_tokens=8))
    results = evaluation.results
    assert results["adapter_score"] >= 0.9, format_report(evaluation)
    assert results["improvement"] >= 0.3 and results["significant"], format_report(evaluation)
    assert len(results["ood"]) == 1
    for name in ("results.json", "base_results.json", "ood_results.json", "outputs.jsonl"):
        assert (result.output / "eval" / name).is_file()
    assert "PASS" in format_report(evaluation) or "out-of-domain degradation" in format_report(evaluation)
