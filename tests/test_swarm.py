"""The shipped swarm on the real embedded model: registry valid, router accurate and current, chat routes."""

import json
from pathlib import Path

from locomlx.cli import main
from locomlx.eval.routing import routing_report
from locomlx.registry import active_adapters, load_registry
from locomlx.router.embedding import load_embedding_router
from locomlx.session import GenerationSettings, Session

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.real
LIBRARY = Path(__file__).resolve().parents[1] / "adapters"


@pytest.fixture(scope="module")
def registry():
    return load_registry(LIBRARY)


def test_shipped_registry_is_valid_and_active_adapters_pass_the_bar(registry):
    result = CliRunner().invoke(main, ["registry", "validate", "--adapters-dir", str(LIBRARY)])
    assert result.exit_code == 0, result.output
    active = active_adapters(registry)
    assert {"math", "sentiment", "spam", "summary"} <= set(active)
    for name in active.values():
        results = json.loads((LIBRARY / registry.adapters[name].path / "eval" / "results.json").read_text())
        assert results["significant"] and results["improvement"] > 0 and results["passed"], name
        domains = {entry.domain for entry in registry.adapters.values()}
        assert len(results["ood"]) == len(domains) - 1, name  # checked on every other domain's benchmark


def test_shipped_router_is_current_and_routes_held_out_queries(real_engine, registry):
    router = load_embedding_router(real_engine, registry, LIBRARY)  # refuses if trained for another registry
    report, _ = routing_report(router, registry, LIBRARY)
    assert report.accuracy > 0.95, report.confusion
    assert report.unroutable == []


def test_chat_routes_a_review_to_the_sentiment_specialist(real_engine, registry):
    session = Session(real_engine, LIBRARY, GenerationSettings(max_tokens=8))
    answer = session.ask("Is the sentiment of this movie review positive or negative? Answer with one word: "
                         "positive or negative.\n\nA gorgeous, moving film with a wonderful cast.")
    assert answer.generation.adapter == active_adapters(registry)["sentiment"]
    assert answer.confidence > 0.5 and "positive" in answer.generation.text.lower()
