"""Read `{"instruction", "input", "output"}` JSONL files, reporting every problem with its line.

A file is read whole and every bad line is reported, not just the first, so a
student fixes everything in one pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_FIELDS = ("instruction", "input", "output")
# Optional fields benchmarks may carry (evaluation metric, multiple-choice options, code tests, provenance).
OPTIONAL_FIELDS = ("id", "metric", "choices", "tests", "source", "category")


@dataclass(frozen=True)
class Example:
    line: int
    instruction: str
    input: str
    output: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Problem:
    """One finding, pinned to a file and (where it has one) a line and a field."""

    path: str
    line: int | None
    message: str
    severity: str = "error"  # error | warning
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        what = f" field '{self.field}':" if self.field else ""
        return f"{where}: {self.severity}:{what} {self.message}"


def _optional_problems(record: dict) -> list[tuple[str, str]]:
    """Type problems of the optional fields, found when the file is read rather than after generating."""
    found = []
    choices = record.get("choices")
    if choices is not None and (not isinstance(choices, list) or len(choices) < 2
                                or not all(isinstance(c, str) and c.strip() for c in choices)):
        found.append(("choices", 'must be a list of at least two non-empty strings, e.g. ["positive", "negative"]'))
    for name in ("metric", "tests", "source", "category"):
        if name in record and not isinstance(record[name], str):
            found.append((name, f"must be a string, got {type(record[name]).__name__}"))
    if "id" in record and (isinstance(record["id"], bool) or not isinstance(record["id"], (str, int))):
        found.append(("id", f"must be a string or an integer, got {type(record['id']).__name__}"))
    return found


def _check_record(record, path: str, line: int, problems: list[Problem]) -> Example | None:
    if not isinstance(record, dict):
        problems.append(Problem(path, line, f"expected a JSON object, got {type(record).__name__}"))
        return None
    ok = True
    for name in REQUIRED_FIELDS:
        if name not in record:
            fix = 'add "input": "" when there is none' if name == "input" else f'add a "{name}" string'
            problems.append(Problem(path, line, f"missing; {fix}", field=name))
            ok = False
        elif not isinstance(record[name], str):
            problems.append(Problem(path, line, f"must be a string, got {type(record[name]).__name__}", field=name))
            ok = False
    for name in record:
        if name not in REQUIRED_FIELDS and name not in OPTIONAL_FIELDS:
            allowed = ", ".join(REQUIRED_FIELDS + OPTIONAL_FIELDS)
            problems.append(Problem(path, line, f"unknown field; remove it (allowed: {allowed})", field=name))
            ok = False
    if not ok:
        return None
    if not record["instruction"].strip():
        problems.append(Problem(path, line, "is empty; every example needs an instruction", field="instruction"))
        ok = False
    if not record["output"].strip():
        problems.append(Problem(path, line, "is empty; every example needs an answer", field="output"))
        ok = False
    for name, problem in _optional_problems(record):
        problems.append(Problem(path, line, problem, field=name))
        ok = False
    if not ok:
        return None
    extra = {k: v for k, v in record.items() if k in OPTIONAL_FIELDS}
    return Example(line, record["instruction"], record["input"], record["output"], extra)


MAX_LINE_BYTES = 1 << 20  # one example per line; a longer line is a broken file, and reading it whole costs GBs


def _lines(handle):
    """(line number, bytes) of each line, a line over MAX_LINE_BYTES as None: never more than that in memory."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield number, None
        else:
            yield number, raw.rstrip(b"\n")


def read_examples(path: str | Path) -> tuple[list[Example], list[Problem]]:
    """Parse a JSONL file into examples; every unusable line becomes a Problem instead."""
    path = Path(path)
    if path.is_dir():
        return [], [Problem(str(path), None, "is a folder, not a JSONL file; give the path of the file in it")]
    if not path.is_file():
        return [], [Problem(str(path), None, "file does not exist")]
    examples: list[Example] = []
    problems: list[Problem] = []
    with open(path, "rb") as handle:
        for number, raw in _lines(handle):
            if raw is None:
                problems.append(Problem(str(path), number, f"line longer than {MAX_LINE_BYTES >> 20} MB; one example "
                                                           "per line, each under that"))
                continue
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(Problem(str(path), number,
                                        f"not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8"))
                continue
            try:
                record = json.loads(text)
                json.dumps(record, ensure_ascii=False).encode("utf-8")
            except json.JSONDecodeError as exc:
                problems.append(Problem(str(path), number, f"invalid JSON: {exc.msg} at column {exc.colno}"))
                continue
            except RecursionError:
                problems.append(Problem(str(path), number, "JSON nested too deeply; an example is a flat object"))
                continue
            except UnicodeEncodeError as exc:
                bad = exc.object[exc.start:exc.end].encode("unicode_escape").decode()
                problems.append(Problem(str(path), number, f"holds an invalid character ({bad}, a lone surrogate "
                                                           "escape); remove it or fix the escape"))
                continue
            example = _check_record(record, str(path), number, problems)
            if example is not None:
                examples.append(example)
    if not examples and not problems:
        problems.append(Problem(str(path), None, "file holds no examples"))
    return examples, problems
