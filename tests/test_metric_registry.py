"""The metric registry: a metric added in one place is picked up by eval, voting and registry validation."""

import json

from locomlx.cli import main
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.run import InferenceConfig, run_benchmark
from locomlx.registry.validate import validate_library
from locomlx.scoring.metrics import Score, answer_key, get_metric, metric_names, register_metric, unregister_metric

import pytest
from click.testing import CliRunner

from tests import tiny
from tests.test_registry_fixtures import add_adapter

pytest_plugins = ["tests.test_registry_fixtures"]  # the `library` fixture

KEYS_ASKED: list[str] = []


@pytest.fixture()
def first_word():
    """A toy metric: the answer's first word, case-sensitive; voting counts first words, lowercased."""
    def key(output, example):
        KEYS_ASKED.append(output)
        return (output.split() or [""])[0].lower()

    @register_metric("first_word", answer_key=key, normalises="nothing: the first word, case-sensitive")
    def score(output, example):
        word = (output.split() or [""])[0]
        return Score(float(word == example.output), word)

    KEYS_ASKED.clear()
    yield "first_word"
    unregister_metric("first_word")


def test_the_built_in_metrics_are_registered():
    assert set(metric_names()) >= {"exact_match", "choice", "rouge_l", "pass@1", "judge"}
    assert get_metric("choice").requires == {"choices": list}
    assert get_metric("judge").score is None  # graded by a model
    with pytest.raises(LocomlxError, match="Unknown metric 'bleu'"):
        get_metric("bleu")


def test_a_toy_metric_scores_through_eval_and_the_cli(first_word, tiny_model, tmp_path):
    bench = tiny.write_jsonl(tmp_path / "bench.jsonl", tiny.sentiment_examples(6, 1))
    result = CliRunner().invoke(main, ["eval", "--benchmark", str(bench), "--base-model", str(tiny_model),
                                       "--metric", first_word, "--max-tokens", "3", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])
    assert record["metric"] == "first_word" and record["n_examples"] == 6
    assert all(e["extracted"] == (e["output"].split() or [""])[0] for e in record["examples"])


def test_an_unknown_metric_is_refused_by_the_cli_with_the_list(tiny_model, tmp_path):
    bench = tiny.write_jsonl(tmp_path / "bench.jsonl", tiny.sentiment_examples(6, 1))
    result = CliRunner().invoke(main, ["eval", "--benchmark", str(bench), "--metric", "first_word"])
    assert result.exit_code == 2 and "'first_word' is not a metric" in result.output and "exact_match" in result.output


def test_voting_counts_the_toy_metric_s_answers(first_word, tiny_model, tmp_path):
    bench = tiny.write_jsonl(tmp_path / "bench.jsonl", tiny.sentiment_examples(4, 2))
    engine = Engine.load(str(tiny_model), "float32")
    run = run_benchmark(engine, bench, None, first_word, InferenceConfig(max_tokens=3, votes=3, vote_temperature=1.0))
    assert len(KEYS_ASKED) == 4 * 3  # every sample of every question was keyed by the metric's own answer_key
    assert all(e.vote and e.vote.endswith("agree") for e in run.examples)
    assert answer_key("Positive, surely", first_word) == "positive,"


def test_registry_validate_accepts_a_registered_metric_only(first_word, library, tiny_model):
    add_adapter(library, tiny_model, "alpha", metric=first_word)
    assert validate_library(library) == []
    unregister_metric(first_word)
    (problem,) = [p for p in validate_library(library) if p.severity == "error"]
    assert problem.field == "adapters.alpha.metric" and "first_word" in problem.message


def test_the_metrics_table_in_the_docs_is_the_registry_s():
    from pathlib import Path

    from locomlx.scoring.metrics import metrics_markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    assert metrics_markdown() in page, "docs/evaluation.md: paste the output of `locomlx eval --list-metrics`"
    listed = CliRunner().invoke(main, ["eval", "--list-metrics"])
    assert listed.exit_code == 0 and listed.output.strip() == metrics_markdown()


def test_case_sensitive_exact_match():
    from locomlx.data.records import Example
    from locomlx.scoring.metrics import score_answer

    example = Example(1, "Rewrite in the past tense.", "I walk home.", "I walked home.")
    assert score_answer("exact_match_cased", "I walked home.", example).value == 1.0
    assert score_answer("exact_match_cased", "i walked home", example).value == 0.0
    assert score_answer("exact_match", "i walked home", example).value == 1.0
