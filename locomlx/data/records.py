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
    if not ok:
        return None
    extra = {k: v for k, v in record.items() if k in OPTIONAL_FIELDS}
    return Example(line, record["instruction"], record["input"], record["output"], extra)


def read_examples(path: str | Path) -> tuple[list[Example], list[Problem]]:
    """Parse a JSONL file into examples; every unusable line becomes a Problem instead."""
    path = Path(path)
    if not path.is_file():
        return [], [Problem(str(path), None, "file does not exist")]
    examples: list[Example] = []
    problems: list[Problem] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(str(path), number, f"not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8"))
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(str(path), number, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        example = _check_record(record, str(path), number, problems)
        if example is not None:
            examples.append(example)
    if not examples and not problems:
        problems.append(Problem(str(path), None, "file holds no examples"))
    return examples, problems
