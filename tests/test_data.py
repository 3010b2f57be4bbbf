"""`locomlx data check`: every bad-input case is reported with file, line, field and a fix."""

import json

from locomlx.cli import main
from locomlx.data.checks import check_file

import pytest
from click.testing import CliRunner

from tests import tiny


def _messages(report):
    return [str(p) for p in report.problems]


def _write(tmp_path, lines, name="train.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


GOOD = json.dumps({"instruction": "Say hi", "input": "", "output": "hi"})


def test_each_bad_line_is_reported_with_its_line_and_field(tmp_path):
    path = _write(tmp_path, [
        GOOD,
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"instruction": "x", "output": "y"}),
        json.dumps({"instruction": "x", "input": 3, "output": "y"}),
        json.dumps({"instruction": "x", "input": "", "output": "y", "label": 1}),
        json.dumps({"instruction": "x", "input": "", "output": "   "}),
        b"\xff\xfe broken bytes",
    ])
    messages = "\n".join(_messages(check_file(path, allow_small=True)))
    assert f"{path}:2: error: invalid JSON" in messages
    assert f"{path}:3: error: expected a JSON object, got list" in messages
    assert f"{path}:4: error: field 'input': missing; add \"input\": \"\" when there is none" in messages
    assert f"{path}:5: error: field 'input': must be a string, got int" in messages
    assert f"{path}:6: error: field 'label': unknown field; remove it" in messages
    assert f"{path}:7: error: field 'output': is empty; every example needs an answer" in messages
    assert f"{path}:8: error: not valid UTF-8 (byte 0); re-save the file as UTF-8" in messages


def test_duplicates_exact_and_near(tmp_path):
    rows = [GOOD, GOOD, json.dumps({"instruction": "say HI!", "input": "", "output": "Hi"})]
    report = check_file(_write(tmp_path, rows), allow_small=True)
    messages = "\n".join(_messages(report))
    assert ":2: error: exact duplicate of line 1; remove one of them" in messages
    assert ":3: warning: near-duplicate of line 1" in messages


def test_minimum_sizes(tmp_path):
    small = tiny.write_jsonl(tmp_path / "small.jsonl", tiny.sentiment_examples(40, 0))
    report = check_file(small, "train")
    assert "40 usable train examples; the contributing rules ask for at least 500 (or pass --allow-small" in \
        "\n".join(_messages(report))
    assert report.errors
    relaxed = check_file(small, "train", allow_small=True)
    assert not relaxed.errors and relaxed.warnings
    bench = check_file(small, "benchmark")
    assert "40 usable benchmark examples; the contributing rules ask for at least 50" in "\n".join(_messages(bench))


def test_leakage_exact_normalised_and_ngram(tmp_path):
    long_text = "the quick brown fox jumps over the lazy dog while the band plays on in the old town square"
    train_rows = tiny.sentiment_examples(60, 0) + [
        {"instruction": "Summarize.", "input": long_text + " tonight", "output": "fox"},
    ]
    bench_rows = [
        dict(train_rows[0]),  # exact
        {"instruction": "Classify.", "input": train_rows[1]["input"].upper() + "!!", "output": "x"},  # normalised
        {"instruction": "Summarize.", "input": long_text, "output": "fox"},  # 8-gram overlap
        {"instruction": "Classify.", "input": "An entirely different sentence about nothing.", "output": "x"},
    ]
    train = tiny.write_jsonl(tmp_path / "train.jsonl", train_rows)
    bench = tiny.write_jsonl(tmp_path / "bench.jsonl", bench_rows)
    report = check_file(train, "train", allow_small=True, benchmarks=[bench])
    leaks = [m for m in _messages(report) if "benchmark" in m]
    assert len(leaks) == 3, leaks
    assert f"{train}:1: error: same text as benchmark {bench}:1" in leaks[0]
    assert f"same text as benchmark {bench}:2" in leaks[1]
    assert f"of the 8-word sequences of benchmark {bench}:3 occur in the training set" in leaks[2]


def test_length_check_counts_long_examples(tmp_path):
    rows = tiny.sentiment_examples(10, 0)
    rows[3]["input"] = "word " * 400
    path = tiny.write_jsonl(tmp_path / "t.jsonl", rows)
    report = check_file(path, allow_small=True, token_counter=lambda exs: [len(e.input.split()) + 10 for e in exs],
                        max_seq_length=64)
    assert "1 examples are longer than --max-seq-length 64 tokens and will be truncated to it (lines 4)" in \
        "\n".join(_messages(report))


def test_cli_exit_codes_and_json(tmp_path, tiny_model):
    good = tiny.write_jsonl(tmp_path / "good.jsonl", tiny.sentiment_examples(500, 0))
    bad = _write(tmp_path, [GOOD, "{oops"], name="bad.jsonl")
    runner = CliRunner()
    ok = runner.invoke(main, ["data", "check", str(good), "--base-model", str(tiny_model)])
    assert ok.exit_code == 0, ok.output
    assert "OK · 500 examples · 0 errors" in ok.output
    fail = runner.invoke(main, ["data", "check", str(bad), "--no-length-check", "--allow-small", "--json"])
    assert fail.exit_code == 1
    report = json.loads(fail.output)
    assert report[0]["problems"][0]["line"] == 2 and "invalid JSON" in report[0]["problems"][0]["message"]


@pytest.mark.parametrize("kind", ["train", "benchmark"])
def test_missing_file(tmp_path, kind):
    report = check_file(tmp_path / "nope.jsonl", kind)
    assert "file does not exist" in _messages(report)[0]
