"""The shipped swarm on the real embedded model: registry valid, router accurate and current, chat routes."""

import json
from pathlib import Path

from locomlx.cli import main
from locomlx.eval.routing import routing_report
from locomlx.registry import active_adapters, load_registry
from locomlx.registry.checklist import missing_ood_benchmarks, same_domain_benchmarks
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
    """What the shipped library promises, read from its registry (a contributor's new domain is checked the same
    way): every domain with an active adapter passes the bar, and every adapter is scored on every other
    domain's benchmark."""
    result = CliRunner().invoke(main, ["registry", "validate", "--adapters-dir", str(LIBRARY)])
    assert result.exit_code == 0, result.output
    active = active_adapters(registry)
    assert active, "the shipped library has no active adapter"
    for name in active.values():
        results = json.loads((LIBRARY / registry.adapters[name].path / "eval" / "results.json").read_text())
        assert results["significant"] and results["improvement"] > 0 and results["passed"], name
    for name, entry in registry.adapters.items():
        results = json.loads((LIBRARY / entry.path / "eval" / "results.json").read_text())
        missing = missing_ood_benchmarks(LIBRARY / entry.path, LIBRARY, results,
                                         same_domain_benchmarks(registry, LIBRARY, name))
        assert missing == [], f"{name} is not scored on {missing}: run `loco registry sync` (CONTRIBUTING.md, step 5)"


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
