"""Evaluation runs on the tiny model: batched answers, scoring, caching, results.json, the verdict."""

import json

from locomlx.cli import main
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.evaluate import evaluate_adapter
from locomlx.eval.run import InferenceConfig, load_benchmark, run_benchmark
from locomlx.prompt import example_messages
from locomlx.scoring.metrics import choose_metric
from locomlx.scoring.results import SCHEMA, validate_results

import pytest
from click.testing import CliRunner

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


def test_run_scores_every_example_and_caches_the_base_answers(engine, library, monkeypatch):
    bench = library / "alpha" / "eval" / "benchmark.jsonl"
    calls = []
    original = engine.generate_batch
    monkeypatch.setattr(engine, "generate_batch", lambda *a, **k: calls.append(1) or original(*a, **k))
    inference = InferenceConfig(max_tokens=4, batch_size=5)
    run = run_benchmark(engine, bench, None, "exact_match", inference)
    assert run.n_examples == 12 and len(run.examples) == 12 and calls == [1]  # one call; the engine batches
    assert run.score == sum(e.score for e in run.examples) / 12
    assert run.ci.low <= run.score <= run.ci.high
    assert [e.line for e in run.examples] == list(range(1, 13))
    again = run_benchmark(engine, bench, None, "exact_match", inference)
    assert calls == [1]  # the base's answers came from the cache ...
    assert [e.output for e in again.examples] == [e.output for e in run.examples]
    rescored = run_benchmark(engine, bench, None, "rouge_l", inference)
    assert calls == [1] and rescored.metric == "rouge_l"  # ... and are scored afresh by any metric
    limited = run_benchmark(engine, bench, None, "exact_match", InferenceConfig(max_tokens=4, limit=3))
    assert limited.n_examples == 3


def test_answer_cache_extends_a_prefix_and_covers_adapters(engine, library, monkeypatch):
    engine.load_adapter(library / "beta")
    bench = library / "beta" / "eval" / "benchmark.jsonl"
    prompts = []
    original = engine.generate_batch
    monkeypatch.setattr(engine, "generate_batch", lambda c, *a, **k: prompts.append(len(c)) or original(c, *a, **k))
    inference = InferenceConfig(max_tokens=5, batch_size=4)
    head = run_benchmark(engine, bench, "beta", "exact_match", InferenceConfig(max_tokens=5, batch_size=4, limit=5))
    assert sum(prompts) == 5
    full = run_benchmark(engine, bench, "beta", "exact_match", inference)
    assert sum(prompts) == 12  # only the 7 answers the cache lacked were generated
    assert [e.output for e in full.examples[:5]] == [e.output for e in head.examples]
    fresh = [original([example_messages(ex.instruction, ex.input)], "beta", 5).texts[0] for ex in load_benchmark(bench)]
    assert [e.output for e in full.examples] == fresh  # pieces equal one uncached pass
    run_benchmark(engine, bench, "beta", "exact_match", inference)
    assert sum(prompts) == 12  # the adapter's answers are cached too
    engine.unload_adapter("beta")
    engine.load_adapter(library / "alpha", "beta")  # same name, other weights: a different cache entry
    run_benchmark(engine, bench, "beta", "exact_match", inference)
    assert sum(prompts) == 24


def test_metric_choice_rules(tmp_path):
    rows = tiny.sentiment_examples(4, 0)
    mixed = tiny.write_jsonl(tmp_path / "mixed.jsonl",
                             [dict(rows[0], metric="rouge_l"), dict(rows[1], metric="choice")])
    with pytest.raises(LocomlxError, match="mixes metrics"):
        choose_metric(load_benchmark(mixed), None)
    assert choose_metric(load_benchmark(mixed), "exact_match") == "exact_match"
    plain = load_benchmark(tiny.write_jsonl(tmp_path / "plain.jsonl", rows))
    assert choose_metric(plain, None) == "exact_match"
    with pytest.raises(LocomlxError, match="needs a 'choices' list on every row; missing on lines \\[1, 2, 3, 4\\]"):
        choose_metric(plain, "choice")
    with pytest.raises(LocomlxError, match="'pass@1' needs a 'tests' str on every row"):
        choose_metric(plain, "pass@1")
    with pytest.raises(LocomlxError, match="Unknown metric 'bleu'"):
        choose_metric(plain, "bleu")


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


def test_ood_limit_scores_a_prefix_of_the_other_benchmarks(tiny_model, library):
    result = CliRunner().invoke(main, ["eval", str(library / "alpha"), "--adapters-dir", str(library), "--json",
                                       "--base-model", str(tiny_model), "--max-tokens", "4", "--ood-limit", "5"])
    results = json.loads(result.stdout)  # stderr has the warning that 12 examples are under the minimum
    assert "has 12 examples" in result.stderr
    assert results["n_examples"] == 12 and [o["n_examples"] for o in results["ood"]] == [5]
    assert results["inference"]["ood_limit"] == 5


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


def test_cli_scores_the_base_model_alone(tiny_model, library):
    bench = library / "beta" / "eval" / "benchmark.jsonl"
    result = CliRunner().invoke(main, ["eval", "--benchmark", str(bench), "--base-model", str(tiny_model),
                                       "--max-tokens", "3", "--metric", "rouge_l"])
    assert result.exit_code == 0, result.output
    assert f"base on {bench}: rouge_l" in result.output and "95% CI" in result.output
    missing = CliRunner().invoke(main, ["eval", "--base-model", str(tiny_model)])
    assert missing.exit_code == 1 and "Give an ADAPTER, or --benchmark FILE" in missing.output


def test_pass_at_1_scores_code_in_the_sandbox(engine, tmp_path):
    """A benchmark whose reference passes its tests, scored on a stub model answer through the real path."""
    from locomlx.data.records import Example
    from locomlx.scoring.metrics import score_answer

    example = Example(1, "Complete the function.", "def add(a, b):\n", "    return a + b\n",
                      {"tests": "assert add(2, 3) == 5\n", "metric": "pass@1"})
    assert score_answer("pass@1", "```python\ndef add(a, b):\n    return a + b\n```", example).value == 1.0
    assert score_answer("pass@1", "    return a * b\n", example).value == 0.0
    assert score_answer("pass@1", "    while True: pass\n", example).extracted in ("timeout", "failed")


def test_judge_grades_k_times_and_reports_the_spread(engine, tmp_path):
    from locomlx.eval.judge import JudgeSettings, judge_scores, parse_grade

    assert parse_grade("8/10, mostly right") == 8.0 and parse_grade("Grade: 10") == 10.0
    assert parse_grade("no idea") is None
    scores, passes = judge_scores(engine, ["q1", "q2"], ["r1", "r2"], ["a1", "a2"], JudgeSettings(k=3, seed=5))
    assert len(scores) == 2 and len(passes) == 3
    assert all(0.0 <= s.value <= 1.0 and s.extracted.startswith("grades ") for s in scores)
    again, _ = judge_scores(engine, ["q1", "q2"], ["r1", "r2"], ["a1", "a2"], JudgeSettings(k=3, seed=5))
    assert again == scores  # seeded sampling: the same grades


def test_judge_metric_end_to_end(tiny_model, tmp_path):
    bench = tiny.write_jsonl(tmp_path / "judged.jsonl",
                             [dict(r, metric="judge") for r in tiny.sentiment_examples(4, 0)])
    run = run_benchmark(Engine.load(str(tiny_model), "float32"), bench, None, None, InferenceConfig(max_tokens=3))
    assert run.metric == "judge" and len(run.judge_pass_scores) == 3
    assert run.score == pytest.approx(sum(run.judge_pass_scores) / 3)
