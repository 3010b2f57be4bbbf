"""Mixed-adapter batches, composition, and voting runs on the tiny model."""

import json

from locomlx.cli import main
from locomlx.engine.engine import Engine
from locomlx.eval.run import InferenceConfig, run_benchmark
from locomlx.prompt import example_messages

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from tests import tiny


@pytest.fixture(scope="module")
def library(tiny_model, tmp_path_factory):
    """Three adapters of different ranks and targets; alpha and beta share a domain in the registry."""
    root = tmp_path_factory.mktemp("library")
    tiny.make_adapter(root / "alpha", tiny_model, rank=4, seed=11)
    tiny.make_adapter(root / "beta", tiny_model, rank=8, scale=1.0, seed=12, keys=("self_attn.k_proj", "mlp.down_proj"))
    tiny.make_adapter(root / "gamma", tiny_model, rank=2, scale=3.0, seed=13, num_layers=1,
                      keys=("mlp.up_proj", "self_attn.o_proj"))
    for name in ("alpha", "beta", "gamma"):
        tiny.write_jsonl(root / name / "eval" / "benchmark.jsonl", tiny.sentiment_examples(6, 3))
    (root / "registry.yaml").write_text(
        "version: 2\nbase_model: {id: tiny, quantization: none, academic_year: 2026-27, "
        "file_sha256: '" + "0" * 64 + "'}\n"
        "adapters:\n"
        "  alpha: {domain: sentiment, version: 1.0.0, path: alpha, active: true}\n"
        "  beta: {domain: sentiment, version: 1.1.0, path: beta}\n"
        "  gamma: {domain: spam, version: 1.0.0, path: gamma, active: true}\n")
    return root


@pytest.fixture()
def engine(tiny_model, library):
    engine = Engine.load(str(tiny_model), "float32")
    for name in ("alpha", "beta", "gamma"):
        engine.load_adapter(library / name)
    return engine


def _conversations(n):
    return [example_messages(r["instruction"], r["input"]) for r in tiny.sentiment_examples(n, 5)]


def test_mixed_batch_equals_each_conversation_alone_with_its_adapter(engine):
    conversations = _conversations(7)
    adapters = ["alpha", "beta", None, "gamma", "alpha+beta", "beta", "alpha"]
    alone = [engine.generate_batch([c], a, max_tokens=8, logprobs=True) for c, a in zip(conversations, adapters)]
    # End some answers early (an end-of-sequence token they produce), so rows leave the batch mid-way.
    first = engine.tokenizer.encode(alone[2].texts[0], add_special_tokens=False)[0]
    engine.tokenizer.eos_token_ids = set(engine.tokenizer.eos_token_ids) | {first}
    alone = [engine.generate_batch([c], a, max_tokens=8, logprobs=True) for c, a in zip(conversations, adapters)]
    assert len({len(g.texts[0]) for g in alone}) > 1 and alone[2].texts[0] == ""
    engine.select("gamma")
    mixed = engine.generate_batch(conversations, adapters=adapters, max_tokens=8, batch_size=4, logprobs=True)
    assert mixed.texts == [g.texts[0] for g in alone]
    finite = [(m, g.mean_logprobs[0]) for m, g in zip(mixed.mean_logprobs, alone) if np.isfinite(m)]
    np.testing.assert_allclose(*zip(*finite), atol=1e-4)
    assert mixed.adapters == ["alpha", "beta", None, "gamma", "alpha:0.5+beta:0.5", "beta", "alpha"]
    assert engine.selection.active == "gamma" and engine.selection.mix is None  # the selection is left as it was


def test_mixed_batch_is_one_forward_pass_per_step(engine, monkeypatch):
    calls = []
    original = type(engine.model).__call__
    monkeypatch.setattr(type(engine.model), "__call__",
                        lambda self, *a, **k: calls.append(a[0].shape) or original(self, *a, **k))
    engine.generate_batch(_conversations(4), adapters=["alpha", "beta", "gamma", None], max_tokens=3, batch_size=4)
    assert all(shape[0] == 4 for shape in calls)  # every call carries all four rows, whatever their adapter


def test_an_ensembles_repeated_rows_prefill_once_per_member_and_answer_as_alone(engine, monkeypatch):
    """An ensemble with votes repeats each (question, member) row: each pair is prefilled once, with its member's
    adapter (one question, two members: two prefills), and every greedy row answers as that pair alone."""
    first, second = _conversations(2)
    jobs = [(first, "alpha")] * 3 + [(first, "beta")] * 2 + [(second, "alpha"), (second, None)]
    alone = [engine.generate_batch([c], a, max_tokens=6, logprobs=True) for c, a in jobs]
    calls = []
    original = type(engine.model).__call__
    monkeypatch.setattr(type(engine.model), "__call__",
                        lambda self, *a, **k: calls.append(a[0].shape) or original(self, *a, **k))
    mixed = engine.generate_batch([c for c, _ in jobs], adapters=[a for _, a in jobs], max_tokens=6, batch_size=8,
                                  logprobs=True)
    prompt = len(engine.tokenizer.apply_chat_template(first, add_generation_prompt=True))
    assert calls[:3] == [(1, prompt - 1)] * 2 + [(5, 1)]  # alpha's prefill, beta's, then their rows' last tokens
    assert mixed.texts == [g.texts[0] for g in alone]
    np.testing.assert_allclose(mixed.mean_logprobs, [g.mean_logprobs[0] for g in alone], atol=1e-4)


def _fused_logits(model_dir, parts, tokens):
    """Logits of a fresh model with sum_i w_i s_i a_i b_i added into its weights by hand."""
    from mlx_lm import load

    model, _ = load(str(model_dir))
    modules = dict(model.named_modules())
    for path, weight in parts:
        config = json.loads((path / "adapter_config.json").read_text())["lora_parameters"]
        tensors = mx.load(str(path / "adapter_model.safetensors"))
        for key in {k.rsplit(".", 1)[0] for k in tensors}:
            a, b = tensors[f"{key}.lora_a"], tensors[f"{key}.lora_b"]
            modules[key].weight = modules[key].weight + (weight * config["scale"] * (a @ b)).T
    return np.array(model(mx.array([tokens]))[0])


def test_composition_equals_the_weighted_sum_of_updates(engine, tiny_model, library):
    tokens = [5, 17, 42, 99, 7, 3, 60]
    for spec, parts in (("alpha+beta", [("alpha", 0.5), ("beta", 0.5)]),
                        ("alpha:0.7+gamma:0.3+beta:-0.2", [("alpha", 0.7), ("gamma", 0.3), ("beta", -0.2)])):
        engine.select(spec)
        composed = np.array(engine.model(mx.array([tokens]))[0])
        expected = _fused_logits(tiny_model, [(library / name, w) for name, w in parts], tokens)
        np.testing.assert_allclose(composed, expected, atol=1e-4)
    engine.select("alpha:1")
    alone = np.array(engine.model(mx.array([tokens]))[0])
    np.testing.assert_allclose(alone, _fused_logits(tiny_model, [(library / "alpha", 1.0)], tokens), atol=1e-4)
    engine.unload_adapter("beta")  # takes the compositions that use it along
    assert sorted(engine.adapters) == ["alpha", "alpha:1", "gamma"]
    assert engine.selection.active == "alpha:1"


def test_votes_are_batched_seeded_and_reported(engine, library):
    bench = library / "alpha" / "eval" / "benchmark.jsonl"
    inference = InferenceConfig(max_tokens=6, batch_size=4, votes=3, vote_temperature=1.0, seed=7)
    runs = [run_benchmark(engine, bench, "alpha", "exact_match", inference) for _ in range(2)]
    assert [e.output for e in runs[0].examples] == [e.output for e in runs[1].examples]  # seeded
    splits = [e.vote for e in runs[0].examples]
    assert all(s.endswith("/3 agree") and 1 <= int(s[0]) <= 3 for s in splits)
    ensemble = run_benchmark(engine, bench, "alpha", "exact_match",
                             InferenceConfig(max_tokens=6, batch_size=4, ensemble=["alpha", "beta"]))
    greedy = {name: run_benchmark(engine, bench, name, "exact_match", InferenceConfig(max_tokens=6, batch_size=4))
              for name in ("alpha", "beta")}
    for i, example in enumerate(ensemble.examples):
        assert example.vote.endswith("/2 agree")
        assert example.output in (greedy["alpha"].examples[i].output, greedy["beta"].examples[i].output)


def test_eval_flags_are_recorded_beside_the_plain_results(tiny_model, library):
    args = ["eval", str(library / "alpha"), "--adapters-dir", str(library), "--base-model", str(tiny_model),
            "--max-tokens", "4", "--no-ood", "--reread", "--votes", "3", "--vote-temperature", "0.8", "--ensemble"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 2), result.output
    out = library / "alpha" / "eval" / "enhanced" / "reread+votes3+ensemble"
    record = json.loads((out / "results.json").read_text())
    assert record["inference"]["reread"] and record["inference"]["votes"] == 3
    assert record["inference"]["vote_temperature"] == 0.8 and record["inference"]["ensemble"] == ["alpha", "beta"]
    assert record["inference"]["decoding"] == "majority vote of 3 samples (T=0.8) x 2 adapters"
    assert "inference: majority vote" in result.output
    assert not (library / "alpha" / "eval" / "results.json").exists()  # the plain record is not touched
    lines = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert all(line["vote"].endswith("/6 agree") for line in lines if line["model"] == "alpha")
    assert all(line["vote"].endswith("/3 agree") for line in lines if line["model"] == "base")


def test_chat_votes_and_composition(tiny_model, library):
    runner = CliRunner()
    base = ["chat", "--base-model", str(tiny_model), "--adapters-dir", str(library), "--max-tokens", "4"]
    voted = runner.invoke(main, base + ["--adapter", "alpha", "--votes", "5", "--ensemble", "--reread", "hello"])
    assert voted.exit_code == 0, voted.output
    assert "/10 agree (2 adapters)" in voted.output
    as_json = runner.invoke(main, base + ["--adapter", "alpha+gamma", "--json", "hello"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["adapter"] == "alpha:0.5+gamma:0.5"


def test_comparison_table_has_every_enhancement(engine, library):
    from locomlx.eval.compare import CompareSettings, compare_enhancements, format_table

    settings = CompareSettings(limit=4, max_tokens=4, batch_size=4, votes=2, vote_temperature=1.0)
    rows = compare_enhancements(engine, library, ["alpha", "gamma"], settings, ["alpha+gamma"])
    assert [(r.adapter, r.decoding) for r in rows] == [
        ("alpha", "base model, greedy"), ("alpha", "greedy"), ("alpha", "RE2"), ("alpha", "votes 2 (T=1)"),
        ("alpha", "ensemble of 2"), ("alpha", "composition alpha:0.5+gamma:0.5"),
        ("gamma", "base model, greedy"), ("gamma", "greedy"), ("gamma", "RE2"), ("gamma", "votes 2 (T=1)"),
        ("gamma", "composition alpha:0.5+gamma:0.5")]  # gamma is alone in its domain: no ensemble
    greedy, voted = rows[1], rows[3]
    assert greedy.gain is None and voted.gain == voted.score - greedy.score and 0 <= voted.p_value <= 1
    assert voted.latency_seconds > 0 and voted.cost > 0 and voted.ci95[0] <= voted.score <= voted.ci95[1]
    table = format_table(rows).splitlines()
    assert table[0].startswith("| adapter | benchmark (metric, n) | decoding | score [95% CI]") and len(table) == 13
    assert "| alpha | alpha (exact_match, 4) | votes 2 (T=1) |" in table[5]
