"""`locomlx promote`, `leaderboard` and `report`: who answers for a domain, who ranks first, how it moved."""

import json

from locomlx.cli import main
from locomlx.errors import LocomlxError
from locomlx.registry import active_adapters, load_registry, record_scores
from locomlx.registry.leaderboard import leaderboard
from locomlx.registry.promote import promote
from locomlx.registry.schema import AdapterEntry
from locomlx.registry.store import edit_registry

import pytest
from click.testing import CliRunner

from tests.test_registry_fixtures import add_adapter, fake_results

pytest_plugins = ["tests.test_registry_fixtures"]  # the `library` fixture


@pytest.fixture()
def cohort(library, tiny_model):
    """Sentiment: good (0.8), better (0.85), flat (no significant gain), leaky (OOD loss); math: solver."""
    add_adapter(library, tiny_model, "good", seed=1)
    add_adapter(library, tiny_model, "better", seed=2, adapter_score=0.85)
    add_adapter(library, tiny_model, "flat", seed=3, adapter_score=0.52, p_value=0.6)
    add_adapter(library, tiny_model, "leaky", seed=4, adapter_score=0.9, ood_degradation=0.08)
    add_adapter(library, tiny_model, "solver", domain="math", seed=5, adapter_score=0.4, base_model_score=0.1)
    with edit_registry(library) as registry:
        registry.adapters["later"] = AdapterEntry("later", "sentiment", "0.1.0", source="cohort/later")
    return library


def test_promote_activates_and_demotes_the_previous_one(cohort):
    assert promote(cohort, "good").previous is None
    done = promote(cohort, "better")
    assert done.previous == "good" and done.domain == "sentiment" and done.overridden == []
    assert active_adapters(load_registry(cohort)) == {"sentiment": "better"}
    promote(cohort, "solver")
    assert active_adapters(load_registry(cohort)) == {"sentiment": "better", "math": "solver"}


@pytest.mark.parametrize("name, words", [
    ("flat", r"its gain is not significant \(improvement \+0.020, p = 0.6\)"),
    ("leaky", r"it loses 0.080 out of domain \(at most 0.05 allowed\)"),
])
def test_promote_refuses_without_a_significant_gain_or_with_ood_loss(cohort, name, words):
    promote(cohort, "good")
    with pytest.raises(LocomlxError, match=f"Not promoting '{name}': {words}. Use --force"):
        promote(cohort, name)
    assert active_adapters(load_registry(cohort)) == {"sentiment": "good"}
    forced = promote(cohort, name, force=True)
    assert forced.previous == "good" and forced.overridden
    assert active_adapters(load_registry(cohort)) == {"sentiment": name}


def test_exactly_five_points_lost_is_within_the_bar(cohort, tiny_model):
    """0.17 - 0.12 is 0.05000000000000002 in floating point; five points out of domain still pass, six do not."""
    from locomlx.scoring.bar import within_ood_bar

    assert within_ood_bar(0.17 - 0.12) and within_ood_bar(0.45 - 0.40) and not within_ood_bar(0.18 - 0.12)
    add_adapter(cohort, tiny_model, "edge", seed=6, ood_degradation=0.17 - 0.12)
    assert promote(cohort, "edge").overridden == []


def test_promote_refuses_unevaluated_uninstalled_and_unknown_adapters(cohort):
    with edit_registry(cohort) as registry:
        registry.adapters["good"].scores = None
    with pytest.raises(LocomlxError, match="it has no scores; evaluate it first: locomlx eval good"):
        promote(cohort, "good")
    with pytest.raises(LocomlxError, match="'later' is not installed"):
        promote(cohort, "later", force=True)
    with pytest.raises(LocomlxError, match="No adapter 'nope'"):
        promote(cohort, "nope")


def test_cli_promote(cohort):
    runner = CliRunner()
    args = ["--adapters-dir", str(cohort)]
    assert "good is now the active sentiment adapter." in runner.invoke(main, ["promote", "good", *args]).output
    refused = runner.invoke(main, ["promote", "leaky", *args])
    assert refused.exit_code == 1 and "error: Not promoting 'leaky'" in refused.output
    forced = runner.invoke(main, ["promote", "leaky", "--force", "--json", *args])
    assert forced.exit_code == 0 and json.loads(forced.stdout)["previous"] == "good"


def test_leaderboard_ranks_within_each_domain(cohort):
    promote(cohort, "good")
    board = leaderboard(load_registry(cohort))
    assert list(board) == ["math", "sentiment"]
    assert [(r.rank, r.name) for r in board["sentiment"]] == [(1, "leaky"), (2, "better"), (3, "good"), (4, "flat"),
                                                               (None, "later")]
    assert [r.name for r in board["sentiment"] if r.active] == ["good"]
    assert list(leaderboard(load_registry(cohort), "math")) == ["math"]


def test_leaderboard_outputs(cohort, tmp_path):
    promote(cohort, "good")
    runner = CliRunner()
    args = ["--adapters-dir", str(cohort)]
    text = runner.invoke(main, ["leaderboard", *args]).output
    assert "sentiment (exact_match; * = active)" in text and "good *" in text and "not evaluated" in text
    assert "different benchmarks" in text  # each adapter has a benchmark of its own
    data = json.loads(runner.invoke(main, ["leaderboard", "--json", "--domain", "math", *args]).output)
    assert data["math"][0]["name"] == "solver" and data["math"][0]["improvement"] == pytest.approx(0.3)
    page = tmp_path / "leaderboard.md"
    written = runner.invoke(main, ["leaderboard", "--markdown", str(page), *args])
    assert written.exit_code == 0 and page.read_text().startswith("# Adapter leaderboard (2026-27)")
    assert "| 3 | **good** | 1.0.0 | 0.800 | +0.300 | 0.010 | yes | yes | 2026-fall |" in page.read_text()
    printed = runner.invoke(main, ["leaderboard", "--markdown", *args]).output
    assert printed == page.read_text()
    assert runner.invoke(main, ["leaderboard", "--markdown", "--json", *args]).exit_code == 2


def test_leaderboard_compares_benchmarks_by_content(cohort):
    """Copies of one benchmark file are one benchmark: no "different benchmarks" note."""
    registry = load_registry(cohort)
    sentiment = [e for e in registry.adapters.values() if e.domain == "sentiment" and e.benchmark]
    shared = (cohort / sentiment[0].benchmark).read_bytes()
    for entry in sentiment:
        (cohort / entry.benchmark).write_bytes(shared)
    text = CliRunner().invoke(main, ["leaderboard", "--domain", "sentiment", "--adapters-dir", str(cohort)]).output
    assert "sentiment (exact_match" in text and "different benchmarks" not in text
    (cohort / sentiment[1].benchmark).write_bytes(shared + shared)
    text = CliRunner().invoke(main, ["leaderboard", "--domain", "sentiment", "--adapters-dir", str(cohort)]).output
    assert "different benchmarks" in text


def test_report_shows_the_trend_across_semesters(cohort):
    bench = cohort / "good" / "eval" / "benchmark.jsonl"
    for semester, score in (("2027-spring", 0.88), ("2027-fall", 0.86)):
        with edit_registry(cohort) as registry:
            registry.adapters["good"].semester = semester
        record_scores(cohort, "good", fake_results("good", bench, score))
    result = CliRunner().invoke(main, ["report", "--domain", "sentiment", "--adapters-dir", str(cohort)])
    rows = [line.split() for line in result.output.splitlines()[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("2026-fall", "leaky", "0.900"), ("2027-spring", "good", "0.880"),
                                                  ("2027-fall", "good", "0.860")]
    assert rows[1][4] == "-0.020" and rows[0][-1] == "4"
    data = json.loads(CliRunner().invoke(main, ["report", "--json", "--adapters-dir", str(cohort)]).output)
    assert set(data) == {"math", "sentiment"} and data["sentiment"][0]["change"] is None
