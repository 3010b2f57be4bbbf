"""Tests a code question shows in its own prompt (doctest examples), for choosing among sampled programs.

Self-consistency for code prefers the sample that passes the most tests. Only
tests visible at question time count: the benchmark's hidden `tests` score the
answer, and choosing with them would turn pass@1 into pass@N.
"""

from __future__ import annotations

import re

from locomlx.scoring.sandbox import program_for, run_python

_EXAMPLE = re.compile(r"^[ \t]*>>> (.+)\n[ \t]*(?!>>>)(\S.*)$", re.MULTILINE)
_MARK = "locomlx visible tests passed:"
_CHECKER = '''
__locomlx_passed = 0
for __locomlx_call, __locomlx_expected in {cases!r}:
    try:
        __locomlx_got = eval(__locomlx_call)
        try:
            __locomlx_ok = __locomlx_got == eval(__locomlx_expected)
        except Exception:
            __locomlx_ok = repr(__locomlx_got) == __locomlx_expected
        __locomlx_passed += bool(__locomlx_ok)
    except Exception:
        pass
print({mark!r}, __locomlx_passed)
'''


def visible_tests(prompt: str) -> list[tuple[str, str]]:
    """(call, expected output) of each `>>> call` line followed by its expected value in `prompt`."""
    return [(call.strip(), expected.strip()) for call, expected in _EXAMPLE.findall(prompt)]


def count_passed(prompt: str, answer: str, tests: list[tuple[str, str]], timeout: float = 5.0) -> int:
    """How many of `tests` the answer's code passes, run in the pass@1 sandbox (0 if it does not run)."""
    result = run_python(program_for(prompt, answer, _CHECKER.format(cases=tests, mark=_MARK)), timeout=timeout)
    for line in reversed(result.output.splitlines()):
        if line.startswith(_MARK):
            return int(line[len(_MARK):])
    return 0
