"""The registry file: schema and its line-precise errors, deterministic writing, locking, scores and history."""

import dataclasses
import datetime
import os
import subprocess
import sys
from pathlib import Path

from locomlx.errors import LocomlxError
from locomlx.registry import active_adapters, load_registry, record_scores, registry_hash
from locomlx.registry.schema import (
    ADAPTER_FIELDS,
    BASE_FIELDS,
    HISTORY_FIELDS,
    ROUTER_FIELDS,
    SCORE_FIELDS,
    AdapterEntry,
    BaseModelInfo,
    HistoryRecord,
    RouterHints,
    Scores,
    current_academic_year,
    current_semester,
    format_registry,
    parse_registry,
)
from locomlx.registry.store import edit_registry, registry_path, save_registry

import pytest

from tests.test_registry_fixtures import fake_results

pytest_plugins = ["tests.test_registry_fixtures"]  # the `library` fixture

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
# a hand-written registry
version: 2
base_model:
  id: smollm2-135m
  quantization: Q4_1
  file_sha256: b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  academic_year: 2026-27
adapters:
  sentiment-rt:
    domain: sentiment
    version: 1.0.0
    path: sentiment-rt
    description: Movie review sentiment
    authors: [Ada]
    semester: 2026-fall
    active: true
    metric: choice
    benchmark: sentiment-rt/eval/benchmark.jsonl
    router: {keywords: [review, film], description: Says if a review is positive or negative}
  math-v2:
    version: 2.1.0
    domain: math
    source: cohort/math-v2   # not installed yet
history:
  - {semester: 2026-fall, adapter: sentiment-rt, domain: sentiment, adapter_score: 0.8, base_model_score: 0.5,
     improvement: 0.3, ood_degradation: 0.01, recorded: 2026-11-22}
"""


def problems_of(text):
    return parse_registry(text, "registry.yaml")[1]


def test_the_repository_registry_is_valid():
    registry, problems = parse_registry((REPO / "adapters" / "registry.yaml").read_text(), "adapters/registry.yaml")
    assert problems == []
    assert registry.base_model.id == "smollm2-135m" and registry.base_model.quantization == "Q4_1"


def test_a_missing_registry_is_empty(tmp_path):
    registry = load_registry(tmp_path / "nowhere")
    assert registry.adapters == {} and registry.base_model is None and registry.history == []
    assert active_adapters(registry) == {}


def test_parse_reads_every_field_and_writing_is_deterministic():
    registry, problems = parse_registry(GOOD)
    assert problems == []
    entry = registry.adapters["sentiment-rt"]
    assert entry.domain == "sentiment" and entry.active and entry.installed
    assert entry.router_keywords == ["review", "film"] and entry.authors == ["Ada"]
    assert not registry.adapters["math-v2"].installed and registry.adapters["math-v2"].source == "cohort/math-v2"
    assert registry.history[0].recorded == "2026-11-22"  # a date stays text
    assert registry.line("adapters", "math-v2", "source") == 23
    text = format_registry(registry)
    assert text.startswith("# locomlx adapter registry")
    again, problems = parse_registry(text)
    assert problems == [] and again == registry and format_registry(again) == text
    assert text.index("  math-v2:\n    domain: math\n    version: 2.1.0") > 0  # schema order, file order of entries


def test_schema_tables_match_the_records():
    """One source of truth: each table lists exactly its dataclass's fields."""
    for spec, record in ((BASE_FIELDS, BaseModelInfo), (SCORE_FIELDS, Scores), (ROUTER_FIELDS, RouterHints),
                         (HISTORY_FIELDS, HistoryRecord)):
        assert set(spec) == {f.name for f in dataclasses.fields(record)}
    assert set(ADAPTER_FIELDS) == {f.name for f in dataclasses.fields(AdapterEntry)} - {"name"}


def test_documentation_describes_every_field():
    doc = (REPO / "docs" / "registry.md").read_text()
    for spec in (BASE_FIELDS, ADAPTER_FIELDS, SCORE_FIELDS, ROUTER_FIELDS, HISTORY_FIELDS):
        for name in spec:
            assert f"`{name}`" in doc, name


BAD = [
    # (replace this, with this, line of the problem, field, words in the message)
    ("    domain: sentiment\n", "    domain: sentiment\n    colour: blue\n", 11, "adapters.sentiment-rt.colour",
     "unknown field"),
    ("version: 1.0.0\n    path", "version: '1.0'\n    path", 11, "adapters.sentiment-rt.version", "e.g. 1.0.0"),
    ("version: 1.0.0\n    path", "version: 1.0\n    path", 11, "adapters.sentiment-rt.version", "must be a string"),
    ("semester: 2026-fall\n    active", "semester: autumn\n    active", 15, "adapters.sentiment-rt.semester",
     "e.g. 2026-fall"),
    ("active: true", "active: yes please", 16, "adapters.sentiment-rt.active", "true or false"),
    ("metric: choice", "metric: accuracy", 17, "adapters.sentiment-rt.metric", "exact_match"),
    ("authors: [Ada]", "authors: Ada", 14, "adapters.sentiment-rt.authors", "must be a list"),
    ("    domain: sentiment\n", "", 9, "adapters.sentiment-rt.domain", "is missing"),
    ("    path: sentiment-rt\n", "    path: other\n", 12, "adapters.sentiment-rt.path", "folder name"),
    ("    path: sentiment-rt\n", "    path: ../sentiment-rt\n", 12, "adapters.sentiment-rt.path", "no '..'"),
    ("benchmark: sentiment-rt/", "benchmark: /etc/", 18, "adapters.sentiment-rt.benchmark", "relative path"),
    ("    source: cohort/math-v2   # not installed yet\n", "    active: true\n    source: x/y\n", 23,
     "adapters.math-v2.active", "must be installed"),
    ("    domain: math\n", "    domain: sentiment\n    path: math-v2\n    active: true\n", 24,
     "adapters.math-v2.active", "already active in domain 'sentiment'"),
    ("  math-v2:", "  sentiment-rt:", 20, "adapters.sentiment-rt", "appears twice (first at line 9)"),
    ("  file_sha256: b179", "  file_sha256: B179", 6, "base_model.file_sha256", "wrong format"),
    ("  file_sha256: b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53\n", "", 3,
     "base_model.file_sha256", "file_sha256 (a file) or revision"),
    ("  academic_year: 2026-27\n", "", 3, "base_model.academic_year", "is missing"),
    ("version: 2\n", "version: 1\n", 2, "version", "not one of 2"),
    ("recorded: 2026-11-22", "recorded: yesterday", 26, "history.0.recorded", "e.g. 2026-11-22"),
    ("  sentiment-rt:\n", "  sentiment rt:\n", 9, "adapters.sentiment rt", "letters, digits"),
    ("    description: Movie", "    description: [Movie", 14, None, "while parsing a flow sequence (line 13)"),
]


@pytest.mark.parametrize("old, new, line, field, words", BAD, ids=[case[4] for case in BAD])
def test_each_schema_error_names_line_field_and_fix(old, new, line, field, words):
    assert old in GOOD
    problems = problems_of(GOOD.replace(old, new, 1))
    assert [(p.line, p.field) for p in problems] == [(line, field)], problems
    assert words in problems[0].message and problems[0].severity == "error"
    assert str(problems[0]).startswith(f"registry.yaml:{line}: error:")


def test_load_refuses_an_invalid_registry_with_file_and_line(tmp_path):
    (tmp_path / "registry.yaml").write_text(GOOD.replace("active: true", "active: 1"))
    with pytest.raises(LocomlxError, match=r"registry.yaml:16: error: field 'adapters.sentiment-rt.active'"):
        load_registry(tmp_path)


def test_registry_hash_follows_what_routing_uses():
    registry, _ = parse_registry(GOOD)
    before = registry_hash(registry)
    registry.adapters["sentiment-rt"].description = "reworded"
    registry.adapters["sentiment-rt"].scores = Scores(0.9, 0.5, 0.4, 0.0, 0.001, True)
    registry.adapters["sentiment-rt"].router.keywords.append("movie")
    registry.adapters.pop("math-v2")  # an inactive adapter: the router neither routes to it nor learns from it
    assert registry_hash(registry) == before
    for change in (lambda r: setattr(r.adapters["sentiment-rt"], "active", False),
                   lambda r: setattr(r.adapters["sentiment-rt"], "sha256", "0" * 64),
                   lambda r: setattr(r.adapters["sentiment-rt"], "domain", "opinion"),
                   lambda r: r.adapters.pop("sentiment-rt")):
        changed, _ = parse_registry(GOOD)
        change(changed)
        assert registry_hash(changed) != registry_hash(parse_registry(GOOD)[0])
    assert active_adapters(registry) == {"sentiment": "sentiment-rt"}


def test_hand_written_entries_survive_an_edit(tmp_path):
    (tmp_path / "registry.yaml").write_text(GOOD)
    with edit_registry(tmp_path) as registry:
        registry.adapters["new"] = AdapterEntry("new", "qa", "0.1.0", source="cohort/new")
    registry = load_registry(tmp_path)
    original, _ = parse_registry(GOOD)
    assert list(registry.adapters) == ["sentiment-rt", "math-v2", "new"]
    assert registry.adapters["sentiment-rt"] == original.adapters["sentiment-rt"]
    assert registry.history == original.history


def test_an_edit_that_breaks_the_schema_writes_nothing(tmp_path):
    (tmp_path / "registry.yaml").write_text(GOOD)
    with pytest.raises(LocomlxError, match="adapters.math-v2.active.*nothing was written|nothing was written"):
        with edit_registry(tmp_path) as registry:
            math = registry.adapters["math-v2"]
            math.domain, math.path, math.source, math.active = "sentiment", "math-v2", None, True
    assert (tmp_path / "registry.yaml").read_text() == GOOD


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    (tmp_path / "registry.yaml").write_text(GOOD)
    os.chmod(tmp_path / "registry.yaml", 0o640)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        with edit_registry(tmp_path) as registry:
            registry.adapters.pop("math-v2")
    assert (tmp_path / "registry.yaml").read_text() == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.yaml"]  # no temporary file left
    monkeypatch.undo()
    with edit_registry(tmp_path) as registry:
        registry.adapters.pop("math-v2")
    assert os.stat(tmp_path / "registry.yaml").st_mode & 0o777 == 0o640  # permissions survive the rename


WORKER = """
import sys
from locomlx.registry.schema import AdapterEntry
from locomlx.registry.store import edit_registry
library, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    with edit_registry(library) as registry:
        name = f"w{worker}-{i}"
        registry.adapters[name] = AdapterEntry(name, "d" + worker, "1.0.0", source="x/" + name)
"""


def test_concurrent_edits_lose_no_entry(tmp_path):
    (tmp_path / "registry.yaml").write_text(GOOD)
    workers, count = 4, 8
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(w), str(count)], env=env)
             for w in range(workers)]
    assert [p.wait(timeout=60) for p in procs] == [0] * workers
    registry = load_registry(tmp_path)
    expected = {f"w{w}-{i}" for w in range(workers) for i in range(count)}
    assert expected <= set(registry.adapters) and len(registry.adapters) == 2 + workers * count


def test_record_scores_updates_scores_and_files_history_per_semester(tmp_path):
    (tmp_path / "registry.yaml").write_text(GOOD)
    bench = tmp_path / "bench.jsonl"
    bench.write_text("{}\n")
    entry = record_scores(tmp_path, "sentiment-rt", fake_results("sentiment-rt", bench, 0.7, 0.5))
    assert entry.scores.adapter_score == 0.7 and entry.scores.significant
    record_scores(tmp_path, "sentiment-rt", fake_results("sentiment-rt", bench, 0.75, 0.5))
    registry = load_registry(tmp_path)
    assert registry.adapters["sentiment-rt"].scores.adapter_score == 0.75
    fall = [r for r in registry.history if r.adapter == "sentiment-rt"]
    assert len(fall) == 1 and fall[0].adapter_score == 0.75 and fall[0].semester == "2026-fall"  # replaced, not added
    with edit_registry(tmp_path) as registry:
        registry.adapters["sentiment-rt"].semester = "2027-spring"
    record_scores(tmp_path, "sentiment-rt", fake_results("sentiment-rt", bench, 0.85, 0.5))
    semesters = [r.semester for r in load_registry(tmp_path).history if r.adapter == "sentiment-rt"]
    assert semesters == ["2026-fall", "2027-spring"]
    with pytest.raises(LocomlxError, match="No adapter 'nope'"):
        record_scores(tmp_path, "nope", fake_results("nope", bench))
    broken = fake_results("sentiment-rt", bench)
    del broken["p_value"]
    with pytest.raises(LocomlxError, match="'p_value' is missing"):
        record_scores(tmp_path, "sentiment-rt", broken)


def test_semester_and_academic_year_from_the_date():
    assert current_semester(datetime.date(2026, 9, 1)) == "2026-fall"
    assert current_semester(datetime.date(2027, 2, 1)) == "2027-spring"
    assert current_semester(datetime.date(2027, 7, 1)) == "2027-summer"
    assert current_academic_year(datetime.date(2027, 2, 1)) == "2026-27"
    assert current_academic_year(datetime.date(2026, 8, 1)) == "2026-27"


def test_save_registry_writes_the_documented_header(library):
    registry = load_registry(library)
    save_registry(library, registry)
    text = registry_path(library).read_text()
    assert text.startswith("# locomlx adapter registry, schema version 2 (docs/registry.md).")
    assert "adapters: {}" in text


def test_report_and_leaderboard_agree_on_a_tie(tmp_path):
    from locomlx.registry.history import semester_trend
    from locomlx.registry.leaderboard import leaderboard

    registry, _ = parse_registry(GOOD)
    registry.history = [HistoryRecord("2026-fall", name, "sentiment", 0.8, 0.5, 0.3, drop, "2026-11-22")
                        for name, drop in (("zeta", 0.01), ("alpha", 0.04), ("beta", 0.01))]
    for name, drop in (("zeta", 0.01), ("alpha", 0.04), ("beta", 0.01)):
        registry.adapters[name] = AdapterEntry(name, "sentiment", "1.0.0", path=name, semester="2026-fall",
                                               scores=Scores(0.8, 0.5, 0.3, drop, 0.001, True))
    best = [r for r in leaderboard(registry)["sentiment"] if r.rank == 1][0].name
    assert best == semester_trend(registry)["sentiment"][-1].best_adapter == "beta"
