"""The feedback store: real SQLite in WAL mode beside a library, concurrent writers, the voting rule that turns
verdicts into routing labels, clear errors, and `locomlx feedback list|export|clear`."""

import json
import multiprocessing
import sqlite3

from locomlx.cli import main
from locomlx.errors import LocomlxError
from locomlx.router.feedback import (
    Feedback,
    check_verdict,
    clear_feedback,
    feedback_path,
    feedback_since,
    last_feedback_id,
    read_feedback,
    record_feedback,
    routing_labels,
)

import pytest
from click.testing import CliRunner


def _write_many(args):
    library, worker, count = args
    for i in range(count):
        record_feedback(library, Feedback(f"worker {worker} query {i}", "wrong", "general", None, 0.4,
                                          "embedding", "an answer", "math", "serve"))


def test_records_round_trip_in_wal_mode(tmp_path):
    assert read_feedback(tmp_path) == [] and last_feedback_id(tmp_path) == 0  # no database yet: nothing, no file
    assert not feedback_path(tmp_path).exists()
    first = record_feedback(tmp_path, Feedback("Is this spam? WIN NOW", "good", "spam", "spam-assassin", 0.93,
                                               "embedding", "spam"))
    second = record_feedback(tmp_path, Feedback("12 plus 5?", "wrong", "general", None, 0.51, "embedding",
                                                "Paris", correct_domain="math"))
    assert (first.id, second.id) == (1, 2) and first.created
    rows = read_feedback(tmp_path)
    assert [r.to_dict() for r in rows] == [first.to_dict(), second.to_dict()]
    assert read_feedback(tmp_path, "wrong") == [second] and read_feedback(tmp_path, limit=1) == [second]
    with sqlite3.connect(feedback_path(tmp_path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert feedback_since(tmp_path, 0) == 2 and feedback_since(tmp_path, 1) == 1
    assert clear_feedback(tmp_path) == 2 and read_feedback(tmp_path) == []


def test_concurrent_writers_lose_nothing(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_write_many, [(tmp_path, w, 40) for w in range(4)])
    rows = read_feedback(tmp_path)
    assert len(rows) == 160 and len({r.id for r in rows}) == 160
    assert {r.query for r in rows} == {f"worker {w} query {i}" for w in range(4) for i in range(40)}


def test_bad_verdicts_are_refused_with_the_fix(tmp_path):
    with pytest.raises(LocomlxError, match="names the domain.*/wrong spam.*domains: math, general"):
        check_verdict("wrong", None, ["math", "general"])
    with pytest.raises(LocomlxError, match="Unknown domain 'maths'.*math, general"):
        check_verdict("wrong", "maths", ["math", "general"])
    with pytest.raises(LocomlxError, match="Unknown verdict 'meh'"):
        record_feedback(tmp_path, Feedback("q", "meh"))
    with pytest.raises(LocomlxError, match="Only 'wrong' names"):
        record_feedback(tmp_path, Feedback("q", "good", correct_domain="math"))
    with pytest.raises(LocomlxError, match="no answer to judge"):
        record_feedback(tmp_path, Feedback("  ", "good"))
    feedback_path(tmp_path).parent.mkdir()
    feedback_path(tmp_path).write_bytes(b"this is not a database" * 100)
    with pytest.raises(LocomlxError, match="not a readable feedback database.*move it aside"):
        read_feedback(tmp_path)


def test_votes_become_labels_by_majority_ties_to_the_newest_and_bad_is_not_a_label():
    def vote(query, verdict, routed, correct=None):
        return Feedback(query, verdict, routed, correct_domain=correct)

    records = [
        vote("what is 2 plus 2", "wrong", "general", "math"),
        vote("What is  2 PLUS 2", "wrong", "general", "math"),  # the same query, written differently
        vote("what is 2 plus 2", "good", "general"),  # 2 votes math, 1 general: math
        vote("tie query", "good", "spam"),
        vote("tie query", "wrong", "spam", "sentiment"),  # 1-1: the newest (sentiment) wins
        vote("only bad", "bad", "summary"),  # says nothing about the domain
    ]
    labels = {lab.text: lab for lab in routing_labels(records)}
    assert set(labels) == {"what is 2 plus 2", "tie query"}
    assert (labels["what is 2 plus 2"].domain, labels["what is 2 plus 2"].votes) == ("math", 2)
    assert labels["tie query"].domain == "sentiment"
    held = [lab.heldout for lab in routing_labels([vote(f"query {i}", "good", "math") for i in range(500)])]
    assert 0.14 < sum(held) / len(held) < 0.26  # about one in five held out, by hash


def test_feedback_cli_lists_exports_and_clears(tmp_path):
    record_feedback(tmp_path, Feedback("Is this spam? FREE prize", "wrong", "general", None, 0.4, "embedding",
                                       "no", correct_domain="spam"))
    record_feedback(tmp_path, Feedback("A dull, lifeless film.", "bad", "sentiment", "sentiment-rt", 0.9,
                                       "embedding", "positive"))
    runner = CliRunner()
    listed = runner.invoke(main, ["feedback", "list", "--adapters-dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert "wrong: spam" in listed.output and "sentiment-rt" in listed.output and "dull, lifeless" in listed.output
    as_json = json.loads(runner.invoke(main, ["feedback", "list", "--json", "--verdict", "bad",
                                              "--adapters-dir", str(tmp_path)]).output)
    assert [r["verdict"] for r in as_json] == ["bad"]
    out = tmp_path / "verdicts.jsonl"
    exported = runner.invoke(main, ["feedback", "export", "-o", str(out), "--adapters-dir", str(tmp_path)])
    assert exported.exit_code == 0 and "wrote 2 verdicts" in exported.output
    assert [json.loads(line)["query"] for line in out.read_text().splitlines()] == [
        "Is this spam? FREE prize", "A dull, lifeless film."]
    refused = runner.invoke(main, ["feedback", "clear", "--adapters-dir", str(tmp_path)], input="n\n")
    assert refused.exit_code == 1 and len(read_feedback(tmp_path)) == 2  # said no: nothing deleted
    cleared = runner.invoke(main, ["feedback", "clear", "--yes", "--adapters-dir", str(tmp_path)])
    assert cleared.exit_code == 0 and "deleted 2 verdicts" in cleared.output and read_feedback(tmp_path) == []
