"""Routers: keyword matching rules, the numpy classifier, the embedding router on the tiny model
(training, held-out routing, stale-registry refusal, threshold fallback), chat --adapter auto, CLI."""

import json
import random

from locomlx.cli import main
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.routing import routing_report
from locomlx.registry import load_registry
from locomlx.router.arrow import ArrowRouter, top_direction
from locomlx.router.classifier import (
    choose_thresholds,
    expected_calibration_error,
    fit_logistic,
    predict_with_fallback,
)
from locomlx.router.data import routing_queries
from locomlx.router.decision import GENERAL
from locomlx.router.embedding import chain_decision, load_embedding_router, save_router, train_embedding_router
from locomlx.router.feedback import read_feedback
from locomlx.router.keyword import KeywordRouter, parse_keyword
from locomlx.router.load import load_router
from locomlx.session import GenerationSettings, Session

import numpy as np
import pytest
from click.testing import CliRunner

from tests import tiny
from tests.test_registry_fixtures import add_adapter, fake_results, new_library

pytest_plugins = ["tests.test_registry_fixtures"]


# --- keyword router ---------------------------------------------------------------------------

def _keyword_router(library, tiny_model, hints: dict[str, list[str]]) -> KeywordRouter:
    for seed, (domain, keywords) in enumerate(sorted(hints.items()), start=1):
        add_adapter(library, tiny_model, f"{domain}-a", domain=domain, seed=seed, keywords=keywords)
    registry = load_registry(library)
    for name in registry.adapters:
        registry.adapters[name].active = True
    return KeywordRouter(registry)


def test_keyword_matches_whole_words_only(library, tiny_model):
    router = _keyword_router(library, tiny_model, {"math": ["sum", "add up"], "summaries": ["summarize"]})
    assert router.route("Please summarize this article").domain == "summaries"
    assert router.route("What is the sum of 3 and 4?").domain == "math"
    assert router.route("what's the SUM, please").domain == "math"  # case-insensitive
    assert router.route("add   up these numbers").domain == "math"  # any whitespace inside a phrase
    assert router.route("a summation of facts").adapter is None  # "sum" inside a word is no match


def test_keyword_no_match_is_base_model_and_weights_decide(library, tiny_model):
    router = _keyword_router(library, tiny_model, {"spam": ["free: 3", "winner"], "sentiment": ["review", "movie"]})
    none = router.route("What is the capital of France?")
    assert (none.adapter, none.domain, none.reason) == (None, GENERAL, "no keyword matched: base model")
    mixed = router.route("movie review: winner of a free cruise")
    assert mixed.domain == "spam" and mixed.scores == {"spam": 4.0, "sentiment": 2.0}
    assert mixed.confidence == pytest.approx(4 / 6)


def test_keyword_parsing():
    assert parse_keyword("money back: 2.5", "x").weight == 2.5
    assert parse_keyword("ratio 1:2", "x").phrase == "ratio 1:2"  # not a weight
    with pytest.raises(LocomlxError, match="empty router keyword"):
        parse_keyword(" : 2", "registry adapter 'a'")


# --- classifier -------------------------------------------------------------------------------

def test_logistic_regression_separates_and_thresholds():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    labels = np.repeat(np.arange(3), 50)
    features = centres[labels] + rng.normal(size=(150, 8))
    model = fit_logistic(features, labels, ["a", "b", GENERAL])
    probabilities = model.probabilities(features)
    assert (probabilities.argmax(1) == labels).mean() > 0.97
    assert np.allclose(probabilities.sum(1), 1)
    # Below the threshold everything falls back to the general class (index 2).
    assert (predict_with_fallback(probabilities, 1.01, 2) == 2).all()
    assert (choose_thresholds(probabilities, labels, 2)[:2] < 0.9).all()


def test_the_fallback_chain_tries_the_second_domain_then_the_base_model():
    classes = ["math", "sentiment", GENERAL]
    thresholds = {"math": 0.7, "sentiment": 0.3}
    adapters = {"math": "math-a", "sentiment": "sentiment-a"}
    second = chain_decision(np.array([0.5, 0.4, 0.1]), classes, thresholds, adapters, "embedding", 0.0)
    assert (second.adapter, second.domain) == ("sentiment-a", "sentiment")
    assert [(s.domain, s.taken) for s in second.chain] == [("math", False), ("sentiment", True)]
    assert second.reason == "math 0.50 < 0.70, then sentiment 0.40 >= 0.30"
    base = chain_decision(np.array([0.5, 0.25, 0.25]), classes, thresholds, adapters, "embedding", 0.0)
    assert base.adapter is None and base.reason.endswith("sentiment 0.25 < 0.30: base model")
    top = chain_decision(np.array([0.8, 0.1, 0.1]), classes, thresholds, adapters, "embedding", 0.0)
    assert top.adapter == "math-a" and top.reason == "" and len(top.chain) == 1
    general_first = chain_decision(np.array([0.2, 0.35, 0.45]), classes, thresholds, adapters, "embedding", 0.0)
    assert general_first.adapter is None and general_first.chain == []  # general on top: the base model answers
    # The vectorised rule used to choose thresholds makes the same picks.
    rows = np.array([[0.5, 0.4, 0.1], [0.5, 0.25, 0.25], [0.8, 0.1, 0.1], [0.2, 0.35, 0.45]])
    assert predict_with_fallback(rows, np.array([0.7, 0.3, 0.0]), 2).tolist() == [1, 2, 0, 2]


def test_per_domain_thresholds_beat_one_shared_threshold_when_classes_differ():
    # math is over-predicted (needs 0.8 to be right), sentiment is right from 0.4 on.
    probabilities = np.array([[0.75, 0.15, 0.1]] * 20 + [[0.85, 0.1, 0.05]] * 20 + [[0.3, 0.45, 0.25]] * 20)
    labels = np.array([2] * 20 + [0] * 20 + [1] * 20)
    thresholds = choose_thresholds(probabilities, labels, 2)
    assert (predict_with_fallback(probabilities, thresholds, 2) == labels).all()
    shared = max((predict_with_fallback(probabilities, t, 2) == labels).mean() for t in np.linspace(0, 1, 101))
    assert shared < 1.0


def test_expected_calibration_error():
    labels = np.array([0, 0, 0, 1])
    confident_right = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]])
    assert expected_calibration_error(confident_right, labels) == pytest.approx(0.0)
    overconfident = np.array([[0.99, 0.01]] * 4)  # 75% right at 99% confidence
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.24)


# --- embedding router on the tiny model -------------------------------------------------------

MATH = "Add the numbers and reply with the total."


def _math_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"instruction": MATH, "input": f"{a} plus {b} plus {c}", "output": str(a + b + c)}
            for a, b, c in ((rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 99)) for _ in range(n))]


def _routed_library(tmp_path, tiny_model):
    """Two domains with distinct data (sentiment reviews, sums) and general questions, both active."""
    library = new_library(tmp_path, tiny_model)
    add_adapter(library, tiny_model, "sentiment-a", domain="sentiment", seed=1, keywords=["review"])
    math = add_adapter(library, tiny_model, "math-a", domain="math", seed=2, keywords=["plus"])
    tiny.write_jsonl(math / "training" / "dataset.jsonl", _math_rows(500, 1))
    benchmark = tiny.write_jsonl(math / "eval" / "benchmark.jsonl", _math_rows(50, 2))
    (math / "eval" / "results.json").write_text(json.dumps(fake_results("math-a", benchmark)))
    subjects = "rivers kings planets poets cities rockets bridges painters".split()
    general = [{"query": f"Who named the {s} of year {y}?", "split": "train" if y % 10 < 7 else "heldout"}
               for s in subjects for y in range(1900, 1960)]
    tiny.write_jsonl(library / "router" / "general.jsonl", general)
    runner = CliRunner()
    assert runner.invoke(main, ["registry", "refresh", "--adapters-dir", str(library)]).exit_code == 0
    for name in ("sentiment-a", "math-a"):
        result = runner.invoke(main, ["promote", name, "--adapters-dir", str(library)])
        assert result.exit_code == 0, result.output
    return library


@pytest.fixture()
def routed(tmp_path, tiny_model):
    library = _routed_library(tmp_path, tiny_model)
    engine = Engine.load(str(tiny_model))
    trained = train_embedding_router(engine, load_registry(library), library, per_domain=200)
    save_router(trained, library)
    return library, engine, trained


def test_embedding_router_routes_held_out_queries(routed):
    library, engine, trained = routed
    assert trained.classes == ["math", "sentiment", GENERAL]
    assert 0 <= trained.meta["ece"] <= 1 and trained.meta["validation_accuracy"] > 0.9
    router = load_embedding_router(engine, load_registry(library), library)
    report, _ = routing_report(router, load_registry(library), library)
    assert report.accuracy > 0.9, report.confusion
    assert report.n_queries == 50 + 50 + sum(1 for y in range(1900, 1960) if y % 10 >= 7) * 8
    decision = router.route("Add the numbers and reply with the total.\n\n12 plus 40 plus 7")
    assert (decision.adapter, decision.domain) == ("math-a", "math")
    assert set(decision.scores) == {"math", "sentiment", GENERAL} and 0 <= decision.confidence <= 1
    assert engine.selection.active is None  # routing leaves the engine's selection as it was


def test_threshold_fallback_answers_with_base(routed):
    library, engine, trained = routed
    trained.thresholds = {domain: 1.01 for domain in trained.thresholds}
    decision = trained.route("Add the numbers and reply with the total.\n\n1 plus 2 plus 3")
    assert decision.adapter is None and decision.domain == GENERAL
    assert "math" in decision.reason and "< 1.01" in decision.reason and decision.reason.endswith(": base model")


def test_stale_router_is_refused_after_registry_change(routed, tiny_model):
    library, engine, trained = routed
    add_adapter(library, tiny_model, "spam-a", domain="spam", seed=3, keywords=["spam"])
    # Installed but inactive: nothing to route to, nothing learnt from it, so the router stays current.
    assert load_embedding_router(engine, load_registry(library), library).meta["trained"] == trained.meta["trained"]
    assert CliRunner().invoke(main, ["promote", "spam-a", "--adapters-dir", str(library)]).exit_code == 0
    registry = load_registry(library)
    with pytest.raises(LocomlxError, match="different registry.*locomlx router train"):
        load_embedding_router(engine, registry, library)
    result = CliRunner().invoke(main, ["router", "eval", "--no-task", "--adapters-dir", str(library)])
    assert result.exit_code == 1 and "router train" in result.output
    # Evaluated anyway (the object still in memory), the report names the domain it cannot route to.
    report, _ = routing_report(trained, registry, library)
    assert report.unroutable == ["spam"]
    # The keyword router is built from the registry each time, so it knows the new domain.
    report, _ = routing_report(load_router("keyword", engine, registry, library), registry, library)
    assert "spam" in report.classes and report.unroutable == []


def test_a_domain_without_active_adapter_counts_as_general(routed, tiny_model):
    library, _, _ = routed
    add_adapter(library, tiny_model, "spam-a", domain="spam", seed=3, keywords=["spam"])  # installed, not promoted
    held_out = routing_queries(load_registry(library), library, "heldout")
    spam_rows = [q for q in held_out if "spam-a" in q.source]
    assert spam_rows and {q.domain for q in spam_rows} == {GENERAL}
    assert len({q.text for q in held_out}) == len(held_out)  # shared data is counted once


def test_chat_auto_routes_every_turn(routed):
    library, engine, _ = routed
    session = Session(engine, library, GenerationSettings(max_tokens=8))
    first = session.ask("Add the numbers and reply with the total.\n\n5 plus 6 plus 7")
    assert first.generation.adapter == "math-a" and first.confidence is not None
    assert "routed: math" in first.footer() and "confidence" in first.footer()
    second = session.ask(f"{tiny.SENTIMENT_INSTRUCTION}\n\nReview 1: the plot was dull.")
    assert second.generation.adapter == "sentiment-a"


def test_chat_auto_on_another_base_answers_with_that_base_and_says_why(routed, tmp_path):
    library, _, _ = routed
    # Same layer sizes, other weights: the adapters would load, but they were not trained for this base.
    other = Engine.load(str(tiny.build_model(tmp_path / "other-base", seed=9)))
    answer = Session(other, library, GenerationSettings(max_tokens=4)).ask("5 plus 6 plus 7")
    assert answer.generation.adapter is None
    assert f"since {library} is not for it: its adapters were trained for base model" in answer.note
    assert "--adapters-dir" in answer.footer()


def test_route_and_router_cli(routed):
    library, _, _ = routed
    runner = CliRunner()
    result = runner.invoke(main, ["route", "--json", "--adapters-dir", str(library), "7 plus 8 plus 9"])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["router"] == "embedding" and decision["domain"] in ("math", "sentiment", GENERAL)
    result = runner.invoke(main, ["router", "eval", "--limit", "8", "--max-tokens", "4", "--json",
                                  "--adapters-dir", str(library)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert {row["domain"] for row in report["task"]} == {"math", "sentiment"}
    assert all(row["n_examples"] == 8 for row in report["task"])
    result = runner.invoke(main, ["route", "--router", "nope", "--adapters-dir", str(library), "x"])
    assert result.exit_code == 1 and "Unknown router 'nope'" in result.output


def test_the_headline_experiment_scores_every_system(routed):
    from locomlx.eval.swarm import SYSTEMS, SwarmSettings, run_swarm_experiment

    library, _, _ = routed
    facts = run_swarm_experiment(library, SwarmSettings(limit=4, max_tokens=4, latency_queries=1),
                                 on_progress=lambda m: None)
    assert set(facts["systems"]) == set(SYSTEMS) and facts["domains"] == ["math", "sentiment"]
    assert facts["examples"] == 8 and facts["systems"]["base"]["p_value"] is None
    for system in facts["systems"].values():
        assert 0 <= system["ci95"][0] <= system["score"] <= system["ci95"][1] <= 1
    assert facts["routing_accuracy"] > 0.9 and facts["latency_seconds_mean"] > 0


# --- feedback, the shifted set, Arrow -----------------------------------------------------------

WORDS = "one two three four five six seven eight nine ten eleven twelve".split()


def _word_sums(n: int, seed: int) -> list[str]:
    """Arithmetic asked in words: nothing like the math adapter's digits, so the router has not seen it."""
    rng = random.Random(seed)
    return [f"hey, what do i get if i put {rng.choice(WORDS)} and {rng.choice(WORDS)} together"
            f"{rng.choice(['', ' please', ' quickly', ' for homework'])} {i}" for i in range(n)]


def test_chat_verdicts_are_stored_and_router_train_feedback_changes_routing(routed):
    from locomlx.cli.chat import HELP, slash_command

    library, engine, _ = routed
    assert all(command in HELP for command in ("/good", "/bad", "/wrong DOMAIN"))
    session = Session(engine, library, GenerationSettings(max_tokens=4))
    with pytest.raises(LocomlxError, match="no answer to judge yet"):
        slash_command(session, "/good")
    queries = _word_sums(100, 0)
    before = [load_embedding_router(engine, load_registry(library), library).route(q).domain for q in queries]
    # Users say these belong to the domain the router sends fewest of them to (the random tiny model has no
    # notion of arithmetic in words; what matters is that the feedback moves them).
    target = min(["math", "sentiment"], key=lambda d: sum(b == d for b in before))
    assert sum(d == target for d in before) < 0.5 * len(queries)
    for query, routed_to in zip(queries, before):
        session.ask(query)
        reply = slash_command(session, "/good" if routed_to == target else f"/wrong {target}")
        assert reply.startswith("recorded #")
    with pytest.raises(LocomlxError, match="Unknown domain 'maths'.*math, sentiment, general"):
        slash_command(session, "/wrong maths")
    with pytest.raises(LocomlxError, match="names the domain"):
        slash_command(session, "/wrong")
    assert "not learnt from" in slash_command(session, "/bad")
    stored = read_feedback(library)
    assert len(stored) == 101 and stored[-1].verdict == "bad" and stored[0].answer is not None
    assert target not in {r.routed_domain for r in stored if r.verdict == "wrong"}

    result = CliRunner().invoke(main, ["router", "train", "--feedback", "--per-domain", "200", "--json",
                                       "--adapters-dir", str(library)])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output[result.output.index("{"):])["feedback"]
    assert facts["labels"] == 100 and facts["taught"] + facts["heldout"] == 100 and facts["heldout"] >= 10
    assert facts["heldout_accuracy_after"] >= 0.9 > facts["heldout_accuracy_before"] + 0.3
    assert facts["library_validation_accuracy_after"] >= facts["library_validation_accuracy_before"] - 0.05
    retrained = load_embedding_router(engine, load_registry(library), library)
    fresh = _word_sums(40, 1)  # new queries, never given feedback
    assert sum(retrained.route(q).domain == target for q in fresh) >= 0.8 * len(fresh)
    assert "1 verdict(s) the router has not learnt from" in slash_command(session, "/good")  # only the new one
    listed = CliRunner().invoke(main, ["feedback", "list", "--limit", "1", "--adapters-dir", str(library)])
    assert "1 verdict(s) with a routing label are newer than the router" in listed.output


def test_router_eval_reports_the_shifted_set_and_all_three_routers(routed):
    library, _, _ = routed
    rows = [{"query": q, "domain": "math", "split": "test", "source": "test"} for q in _word_sums(10, 2)]
    rows += [{"query": f"so like, who painted the {s} at the old museum?", "domain": GENERAL, "split": "test",
              "source": "test"} for s in "ceiling doors walls stairs tower".split()]
    rows += [{"query": "ignored: feedback split", "domain": "math", "split": "feedback", "source": "test"}]
    tiny.write_jsonl(library / "router" / "shifted.jsonl", rows)
    result = CliRunner().invoke(main, ["router", "eval", "--no-task", "--json", "--adapters-dir", str(library)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["shifted"]["n_queries"] == 15
    assert [c["router"] for c in report["comparison"]] == ["embedding", "keyword", "arrow"]
    for row in report["comparison"]:
        assert row["shifted"]["n_queries"] == 15 and 0 <= row["shifted"]["accuracy"] <= 1
        assert row["in_distribution"]["n_queries"] == report["n_queries"]
    text = CliRunner().invoke(main, ["router", "eval", "--no-task", "--adapters-dir", str(library)]).output
    assert "15 shifted (router/shifted.jsonl, test split) queries" in text and "| arrow |" in text


def test_arrow_routes_from_the_adapters_weights_with_no_training(routed, tiny_model):
    library, engine, _ = routed
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(64, 8)), rng.normal(size=(8, 48))
    u = np.linalg.svd(a @ b)[0][:, 0]
    assert abs(abs(top_direction(a, b) @ u) - 1) < 1e-9  # the top singular direction, without forming a @ b
    registry = load_registry(library)
    router = ArrowRouter(engine, registry, library)
    decision = router.route("Add the numbers and reply with the total.\n\n12 plus 40 plus 7")
    assert decision.router == "arrow" and set(decision.scores) == {"math", "sentiment"}
    assert abs(sum(decision.scores.values()) - 1) < 1e-5 and len(decision.chain) == 1
    assert decision.domain in ("math", "sentiment", GENERAL)
    # A new active adapter is routable at once: nothing to retrain.
    add_adapter(library, tiny_model, "spam-a", domain="spam", seed=3, keywords=["spam"])
    assert CliRunner().invoke(main, ["promote", "spam-a", "--adapters-dir", str(library)]).exit_code == 0
    grown = load_router("arrow", engine, load_registry(library), library)
    assert grown.classes == ["math", "sentiment", "spam", GENERAL]
    assert set(grown.route("WIN a free cruise now").scores) == {"math", "sentiment", "spam"}


def test_the_feedback_study_runs_quick_and_writes_its_table_and_plot(routed, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    library, _, _ = routed
    rows = [{"query": q, "domain": "math", "split": "feedback" if i < 30 else "test", "source": "test"}
            for i, q in enumerate(_word_sums(45, 3))]
    rows += [{"query": f"so, who built the {s} near the old {p}?", "domain": GENERAL,
              "split": "feedback" if i % 2 else "test", "source": "test"}
             for i, (s, p) in enumerate((s, p) for s in "tower bridge wall".split() for p in "mill port".split())]
    tiny.write_jsonl(library / "router" / "shifted.jsonl", rows)
    out = tmp_path / "research" / "feedback"
    script = Path(__file__).resolve().parents[1] / "scripts" / "research" / "feedback_study.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--adapters-dir", str(library), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    table = out.with_suffix(".md").read_text()
    assert "python scripts/research/feedback_study.py --quick" in table and "| 20 | 10 |" in table
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    facts = json.loads(out.with_suffix(".json").read_text())
    assert [r["feedback"] for r in facts["rows"]] == [0, 10] and facts["test_queries"] == 18
