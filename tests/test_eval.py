"""Evaluation runs on the tiny model: batched answers, scoring, caching, results.json, the verdict."""

import json

import pytest
from click.testing import CliRunner

from locomlx.cli import main
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.evaluate import evaluate_adapter
from locomlx.eval.results import SCHEMA, validate_results
from locomlx.eval.run import InferenceConfig, choose_metric, load_benchmark, run_benchmark
from locomlx.prompt import example_messages
from tests import tiny


@pytest.fixture(scope="module")
def library(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    for name, seed, skip in (("alpha", 11, 0), ("beta", 12, 400)):
        adapter = tiny.make_adapter(root / name, tiny_model, rank=4, seed=seed)
        tiny.write_jsonl(adapter / "eval" / "benchmark.jsonl", tiny.sentiment_examples(12, 3, skip=skip))
    return root


@pytest.fixture()
def engine(tiny_model):
    return Engine.load(str(tiny_model), "float32")


def test_batched_answers_equal_one_at_a_time(engine, library):
    engine.load_adapter(library / "alpha")
    rows = tiny.sentiment_examples(6, 5)
    conversations = [example_messages(r["instruction"], r["input"]) for r in rows]
    for adapter in (None, "alpha"):
        batched = engine.generate_batch(conversations, adapter, max_tokens=6, batch_size=4).texts
        single = [engine.generate(c, adapter=adapter, max_tokens=6).text for c in conversations]
        assert batched == single


def test_run_scores_every_example_and_caches_the_base(engine, library, monkeypatch):
    bench = library / "alpha" / "eval" / "benchmark.jsonl"
    calls = []
    original = engine.generate_batch
    monkeypatch.setattr(engine, "generate_batch", lambda *a, **k: calls.append(1) or original(*a, **k))
    inference = InferenceConfig(max_tokens=4, batch_size=5)
    run = run_benchmark(engine, bench, None, "exact_match", inference)
    assert run.n_examples == 12 and len(run.examples) == 12 and calls == [1, 1, 1]
    assert run.score == sum(e.score for e in run.examples) / 12
    assert run.ci.low <= run.score <= run.ci.high
    assert [e.line for e in run.examples] == list(range(1, 13))
    again = run_benchmark(engine, bench, None, "exact_match", inference)
    assert calls == [1, 1, 1] and again.to_dict() == run.to_dict()  # the base run came from the cache
    limited = run_benchmark(engine, bench, None, "exact_match", InferenceConfig(max_tokens=4, limit=3))
    assert limited.n_examples == 3


def test_metric_choice_rules(tmp_path):
    rows = tiny.sentiment_examples(4, 0)
    mixed = tiny.write_jsonl(tmp_path / "mixed.jsonl", [dict(rows[0], metric="rouge_l"), dict(rows[1], metric="choice")])
    with pytest.raises(LocomlxError, match="mixes metrics"):
        choose_metric(load_benchmark(mixed), None)
    assert choose_metric(load_benchmark(mixed), "exact_match") == "exact_match"
    plain = load_benchmark(tiny.write_jsonl(tmp_path / "plain.jsonl", rows))
    assert choose_metric(plain, None) == "exact_match"
    with pytest.raises(LocomlxError, match="needs a 'choices' list on every row; missing on lines \\[1, 2, 3, 4\\]"):
        choose_metric(plain, "choice")
    with pytest.raises(LocomlxError, match="'pass@1' is not available yet"):
        choose_metric(plain, "pass@1")


def test_evaluate_writes_valid_results_and_reports_fail(tiny_model, library):
    result = CliRunner().invoke(main, ["eval", str(library / "alpha"), "--adapters-dir", str(library),
                                       "--base-model", str(tiny_model), "--max-tokens", "4"])
    assert result.exit_code == 2, result.output  # a random adapter earns no significant gain
    assert "FAIL: no significant in-domain gain" in result.output
    assert "95% CI" in result.output and "paired p =" in result.output and "beta" in result.output
    eval_dir = library / "alpha" / "eval"
    results = json.loads((eval_dir / "results.json").read_text())
    assert validate_results(results) == []
    assert results["n_examples"] == 12 and results["metric"] == "exact_match"
    assert results["improvement"] == pytest.approx(results["adapter_score"] - results["base_model_score"])
    assert [e["benchmark"] for e in results["ood"]] == [str(library / "beta" / "eval" / "benchmark.jsonl")]
    assert json.loads((eval_dir / "base_results.json").read_text())["model"] == "base"
    assert len(json.loads((eval_dir / "ood_results.json").read_text())) == 1
    outputs = [json.loads(line) for line in (eval_dir / "outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == 24 and {o["model"] for o in outputs} == {"alpha", "base"}


def test_results_validator_names_each_problem():
    assert validate_results([]) == ["results.json: expected a JSON object"]
    problems = validate_results({"adapter": 3, "adapter_score": 1.5, "adapter_ci95": [0.9, 0.1], "extra": 1})
    text = "\n".join(problems)
    assert "field 'adapter' has type int" in text
    assert "field 'adapter_score' = 1.5 is outside 0..1" in text
    assert "field 'adapter_ci95' must be [low, high]" in text
    assert "field 'timestamp' is missing" in text
    assert "unknown field(s) extra" in text
    assert len([p for p in problems if "is missing" in p]) == len(SCHEMA) - 3


def test_missing_benchmark_is_explained(tiny_model, tmp_path):
    adapter = tiny.make_adapter(tmp_path / "lonely", tiny_model, rank=2)
    with pytest.raises(LocomlxError, match="No benchmark at .*pass --benchmark FILE"):
        evaluate_adapter(adapter, tmp_path, str(tiny_model))
