"""The pass@1 sandbox, attacked: correct code passes; hostile programs neither touch the host nor pass.

Each attack is written as model-written code would be: a candidate program, then trusted tests. Attacks
that would need the audit hook gone use `_posixsubprocess.fork_exec`, which raises no audit event, so
these tests check the operating system's wall itself (bubblewrap here; CI installs it).
"""

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from locomlx.errors import LocomlxError
from locomlx.scoring import sandbox
from locomlx.scoring.sandbox import MAX_OUTPUT_BYTES, MAX_PROCESSES, answer_code, isolation, run_tests

import pytest

ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"
# Start a program without any audit event: the hook never sees it, only the OS can stop what it does.
SPAWN = ("import _posixsubprocess, os\n"
         "def spawn(*argv):\n"
         "    r, w = os.pipe()\n"
         "    return _posixsubprocess.fork_exec(list(argv), [os.fsencode(argv[0])], True, (), None, None,\n"
         "        -1, -1, -1, -1, -1, -1, r, w, True, False, -1, None, None, None, -1, None, False)\n")


@pytest.fixture(autouse=True, scope="module")
def _isolated():
    if isolation() is None:
        if os.environ.get("CI"):
            pytest.fail("no sandbox found: scripts/setup.sh installs bubblewrap")
        pytest.skip("bubblewrap is not installed (scripts/setup.sh installs it)")


def test_correct_code_passes_and_wrong_code_fails():
    assert run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS).passed
    result = run_tests(WRONG_ADD, ADD_TESTS)
    assert not result.passed and result.status == "failed" and "AssertionError" in result.output


def test_the_tests_may_use_the_prompts_helpers():
    prompt = "def double(x):\n    return 2 * x\n\n\ndef quad(x):\n    \"\"\"Four times x.\"\"\"\n"
    code = answer_code(prompt, "    return double(double(x))\n")
    assert run_tests(code, "assert quad(3) == double(6)\n", setup=prompt).passed


@pytest.mark.parametrize("exit_early", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "raise SystemExit\n",
    "import atexit, os\natexit.register(lambda: os._exit(0))\nraise RuntimeError\n",
    "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\nraise RuntimeError\n",
])
def test_an_early_exit_or_exit_hook_is_never_a_pass(exit_early):
    assert not run_tests(WRONG_ADD + exit_early, ADD_TESTS).passed
    assert not run_tests(exit_early + WRONG_ADD, ADD_TESTS).passed


@pytest.mark.parametrize("fake", [
    "class Always:\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n"
    "def add(a, b):\n    return Always()\n",
    "class Int(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Int(0)\n",
    "def add(a, b):\n    return [Always()]\nclass Always:\n    __eq__ = lambda s, o: True\n",
])
def test_an_always_equal_result_does_not_pass(fake):
    result = run_tests(fake, ADD_TESTS)
    assert not result.passed and "not plain data" in result.output


def test_printed_or_written_verdicts_are_not_believed():
    cases = [("add(1, 2)", "3"), ("add(2, 2)", "0"), ("add(5, 5)", "0")]
    printed = WRONG_ADD + "print('PASS')\nprint('COUNT 99')\nprint('locomlx visible tests passed: 99')\n"
    assert not run_tests(printed, ADD_TESTS).passed
    assert run_tests(printed, cases=cases).visible_passed == 2  # the runner's count: only 2-2 and 5-5 hold
    written = WRONG_ADD + ("import os\nfor fd in range(64):\n    try:\n        os.write(fd, b'PASS COUNT 99')\n"
                           "    except OSError:\n        pass\n")
    assert not run_tests(written, ADD_TESTS).passed  # every fd it holds: none is the verdict's
    assert run_tests(written, cases=cases).visible_passed == 0


def test_the_hook_cannot_be_edited_away():
    program = ("import sys, __main__\nfor name in list(vars(__main__)):\n    setattr(__main__, name, None)\n"
               "import os\nos.system('true')\n")
    result = run_tests(program, ADD_TESTS)  # its state lives in a closure, not in a module the code can edit
    assert not result.passed and "os.system is not allowed" in result.output


def test_host_files_are_invisible_and_unwritable(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host")
    python = Path(sandbox._interpreter())
    size = python.stat().st_size
    program = SPAWN + (
        "import os\n"
        f"def probe():\n    return [os.path.exists({str(secret)!r}), os.path.exists({str(Path.cwd())!r}),\n"
        "            os.path.exists('/etc/passwd')]\n"
        "def truncate():\n"
        "    try:\n"
        f"        os.close(os.open({str(python)!r}, os.O_RDONLY | os.O_TRUNC))\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"
        "    return 'truncated'\n"
        f"def shell_write():\n    spawn('/bin/sh', '-c', 'echo x > {secret}; : > {python}; echo x > /usr/escape')\n"
        "    import time; time.sleep(0.5)\n    return 0\n")
    tests = ("assert probe() == [False, False, False]\nassert truncate() == 'PermissionError'\n"
             "assert shell_write() == 0\n")
    result = run_tests(program, tests)
    assert result.passed, result.output
    assert secret.read_text() == "host" and python.stat().st_size == size and not Path("/usr/escape").exists()


def test_running_as_root_does_not_matter():
    program = "import os\ndef who():\n    return [os.getuid(), os.getgid(), os.getpid() < 10]\n"
    assert run_tests(program, "assert who() == [65534, 65534, True]\n").passed  # nobody, in its own PID space


def test_no_network_by_any_route():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    connections = []

    def accept():
        deadline = time.time() + 6
        while time.time() < deadline:
            try:
                connections.append(listener.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept)
    thread.start()
    program = SPAWN + (
        "import socket, time\n"
        f"def connect():\n    try:\n        socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "    except OSError as e:\n        return type(e).__name__\n    return 'connected'\n"
        f"def bypass():\n    spawn('/usr/bin/python3', '-c',\n"
        f"          \"import socket; socket.create_connection(('127.0.0.1', {port}))\")\n"
        "    time.sleep(1)\n    return 0\n")
    result = run_tests(program, "assert connect() == 'PermissionError'\nassert bypass() == 0\n")
    thread.join()
    listener.close()
    assert result.passed, result.output
    assert connections == []


def test_a_fork_bomb_is_capped_and_every_process_dies_at_the_timeout(tmp_path):
    marker = f"locomlx-bomb-{os.getpid()}"
    program = SPAWN + (
        "import time\n"
        "def bomb():\n    started = 0\n    for _ in range(200):\n        try:\n"
        f"            spawn('/bin/sleep', '300', '{marker}')\n            started += 1\n"
        "        except OSError:\n            break\n    return started\n"
        "def outlive():\n    import os\n    os.setsid()\n"
        f"    spawn('/bin/sh', '-c', 'trap \"\" HUP TERM; sleep 300 # {marker}')\n    while True:\n        pass\n")
    capped = run_tests(program, f"assert bomb() <= {MAX_PROCESSES}\n")
    assert capped.passed, capped.output
    start = time.perf_counter()
    timed_out = run_tests(program, "outlive()\n", timeout=2)
    assert timed_out.status == "timeout" and time.perf_counter() - start < 10
    time.sleep(0.5)
    survivors = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert survivors == []


def test_memory_and_cpu_bombs_are_contained():
    result = run_tests("x = bytearray(4 * 1024 ** 3)\n" + WRONG_ADD, ADD_TESTS, memory_mb=256)
    assert not result.passed and "MemoryError" in result.output
    start = time.perf_counter()
    spin = run_tests("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, timeout=2)
    assert spin.status == "timeout" and time.perf_counter() - start < 10


def test_an_output_flood_is_cut_off():
    result = run_tests("while True:\n    print('spam' * 1000)\n", ADD_TESTS, timeout=20, file_mb=1)
    assert not result.passed and len(result.output) <= MAX_OUTPUT_BYTES


def test_tracing_and_gc_snooping_are_refused():
    for attack in ("import sys\nsys.settrace(lambda *a: None)\n", "import gc\ngc.get_objects()\n"):
        result = run_tests(attack + "def add(a, b):\n    return a + b\n", ADD_TESTS)
        assert not result.passed and "is not allowed" in result.output


def test_writing_inside_the_work_folder_is_allowed():
    program = ("def add(a, b):\n    open('scratch.txt', 'w').write(str(a + b))\n"
               "    return int(open('scratch.txt').read())\n")
    assert run_tests(program, ADD_TESTS).passed


def test_without_isolation_it_refuses_unless_told(monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: None)
    monkeypatch.delenv(sandbox.ALLOW_ENV, raising=False)
    with pytest.raises(LocomlxError, match="bubblewrap.*--allow-unisolated-code"):
        run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS)
    assert run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS, allow_unisolated=True).passed
    result = run_tests("import os\ndef add(a, b):\n    os.system('true')\n", ADD_TESTS, allow_unisolated=True)
    assert not result.passed and "os.system is not allowed" in result.output  # the second layer still holds


def test_answer_code_for_completion_and_full_function_answers():
    prompt = "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n"
    assert answer_code(prompt, "    return sum(xs)\n").startswith(prompt)
    restated = answer_code(prompt, "Sure:\n```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```")
    assert restated.startswith("from typing import List\ndef total")
    assert run_tests(restated, "assert total([1, 2]) == 3\n", setup=prompt).passed
