"""The pass@1 sandbox: correct code passes; every hostile or broken program is contained and fails."""

import os
import time

from locomlx.scoring.sandbox import program_for, run_python

import pytest

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def test_correct_code_passes_and_wrong_code_fails():
    assert run_python("def add(a, b):\n    return a + b\n" + TESTS).passed
    result = run_python("def add(a, b):\n    return a - b\n" + TESTS)
    assert not result.passed and result.status == "failed" and "AssertionError" in result.output


def test_infinite_loop_times_out_quickly():
    start = time.perf_counter()
    result = run_python("while True:\n    pass\n", timeout=2)
    assert result.status == "timeout" and not result.passed
    assert time.perf_counter() - start < 10


def test_crash_is_a_failure():
    assert run_python("import sys\nsys.exit(3)\n").status == "failed"
    assert run_python("raise RuntimeError('boom')\n").status == "failed"


@pytest.mark.parametrize("program,message", [
    ("import os\nos.system('echo pwned > /tmp/locomlx-pwned')\n", "os.system is not allowed"),
    ("import subprocess\nsubprocess.run(['true'])\n", "subprocess.Popen is not allowed"),
    ("import os\nwhile True:\n    os.fork()\n", "os.fork is not allowed"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 80))\n", "is not allowed"),
    ("open('/etc/hostname').read()\n", "opening '/etc/hostname' is not allowed"),
    (f"open({os.path.abspath(__file__)!r}).read()\n", "is not allowed"),
    ("open('/tmp/locomlx-sandbox-escape.txt', 'w').write('x')\n", "is not allowed"),
    ("import os\nos.listdir('/root')\n", "listing '/root' is not allowed"),
    ("import ctypes\nctypes.CDLL(None)\n", "ctypes.dlopen is not allowed"),
    ("import os\nos.remove('program.py')\n", "os.remove is not allowed"),
])
def test_hostile_programs_are_refused(program, message):
    result = run_python(program)
    assert not result.passed and result.status == "failed"
    assert message in result.output
    assert not os.path.exists("/tmp/locomlx-pwned") and not os.path.exists("/tmp/locomlx-sandbox-escape.txt")


def test_code_cannot_add_audit_hooks_of_its_own():
    program = ("import sys\nseen = []\nsys.addaudithook(lambda event, args: seen.append(event))\n"
               "open('scratch.txt', 'w').close()\nassert not seen, seen\n")
    assert run_python(program).passed  # the new hook was refused silently: it never saw an event


def test_memory_bomb_is_contained():
    result = run_python("x = bytearray(4 * 1024 ** 3)\n", memory_mb=256)
    assert not result.passed and "MemoryError" in result.output


def test_huge_output_is_cut_off():
    result = run_python("while True:\n    print('spam' * 1000)\n", timeout=20, file_mb=1)
    assert not result.passed and result.status in ("killed", "failed")
    assert len(result.output) <= 64 * 1024


def test_writing_inside_the_work_dir_is_allowed():
    assert run_python("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n").passed


def test_program_for_completion_and_full_function_answers():
    prompt = "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n"
    completion = program_for(prompt, "    return a + b\n", TESTS)
    assert completion.startswith(prompt) and run_python(completion).passed
    fenced = program_for(prompt, "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.", TESTS)
    assert not fenced.startswith(prompt) and run_python(fenced).passed


def test_restated_functions_keep_the_prompts_imports():
    prompt = "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n"
    answer = "```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    program = program_for(prompt, answer, "assert total([1, 2]) == 3\n")
    assert program.startswith("from typing import List\ndef total") and run_python(program).passed
