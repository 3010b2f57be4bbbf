"""scripts/reproduce.py: the one timed run that regenerates the README's numbers."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import reproduce  # noqa: E402


def test_every_step_names_commands_that_exist():
    for step in reproduce.STEPS:
        for command in step.commands:
            program = command[1] if command[0] == reproduce.PYTHON else None
            if program:
                assert (ROOT / program).is_file(), f"{step.name}: {program} does not exist"
            else:
                assert command[0] == reproduce.LOCOMLX, f"{step.name}: runs {command[0]}, not python or locomlx"


def test_the_readme_quotes_every_step_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for step in reproduce.STEPS:
        for command in step.commands:
            text = reproduce.shown(command)
            if step.name != "chat":  # the README shows `make chat`, whose question is the Makefile's
                assert text in readme or text.replace("locomlx ", ".venv/bin/locomlx ", 1) in readme \
                    or text.replace("python ", ".venv/bin/python ", 1) in readme, f"README does not show `{text}`"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"Q ?= {reproduce.CHAT_QUESTION}" in makefile


def test_a_step_logs_its_commands_output_and_stops_at_a_failure(tmp_path):
    ok = (sys.executable, "-c", "print('first')")
    fails = (sys.executable, "-c", "import sys; print('1/2', end='\\r'); print('2/2'); print('second'); sys.exit(3)")
    never = (sys.executable, "-c", "print('third')")
    step = reproduce.Step("demo", "a demonstration", (ok, fails, never))
    log = tmp_path / "logs" / "demo.txt"
    outcome = reproduce.run_step(step, log, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert outcome.exit_codes == [0, 3] and not outcome.ok
    text = log.read_text()
    assert "\nfirst\n$ python -c" in text  # the venv's interpreter is shown as `python`
    assert text.endswith("\n2/2\nsecond\n[exit 3]\n")  # a line redrawn with \r: its last state only
    table = reproduce.summary([outcome], outcome.seconds, fresh_cache=True)
    assert "| demo |" in table and "FAILED" in table and "third" not in table


def test_list_prints_every_step_and_runs_nothing(tmp_path):
    listed = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--list", "--out", str(tmp_path)],
                            capture_output=True, text=True, check=True).stdout
    assert all(f"{step.name}: " in listed for step in reproduce.STEPS)
    assert not any(tmp_path.iterdir())
