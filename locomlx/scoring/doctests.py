"""Tests a code question shows in its own prompt (doctest examples), for choosing among sampled programs.

Self-consistency for code prefers the sample that passes the most tests. Only
tests visible at question time count: the benchmark's hidden `tests` score the
answer, and choosing with them would turn pass@1 into pass@N.
"""

from __future__ import annotations

import re

from locomlx.scoring.sandbox import answer_code, run_tests

_EXAMPLE = re.compile(r"^[ \t]*>>> (.+)\n[ \t]*(?!>>>)(\S.*)$", re.MULTILINE)


def visible_tests(prompt: str) -> list[tuple[str, str]]:
    """(call, expected output) of each `>>> call` line followed by its expected value in `prompt`."""
    return [(call.strip(), expected.strip()) for call, expected in _EXAMPLE.findall(prompt)]


def count_passed(prompt: str, answer: str, tests: list[tuple[str, str]], timeout: float = 5.0) -> int:
    """How many of `tests` the answer's code passes, counted by the sandbox's runner (never by the program:
    see sandbox.py), 0 if it does not run."""
    return run_tests(answer_code(prompt, answer), setup=prompt, cases=tests, timeout=timeout).visible_passed
