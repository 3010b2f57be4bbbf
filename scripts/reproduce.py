#!/usr/bin/env python3
"""Regenerate every number in the README from the committed adapters, in one timed run.

Runs, one after the other (one heavy process at a time: two would share the cores badly), every command
whose output the README quotes: the adapters' evaluations (scores, leaderboard, promotion, router), the
headline experiment, the router evaluation, the enhancement comparison, routed chat, the benchmarks and
HumanEval. Each command's output goes to docs/reproduce/STEP.txt, and docs/reproduce/README.md records
what ran, on what machine, at which commit, and how long each step took.

By default the run starts from an empty locomlx cache (a fresh LOCOMLX_CACHE: the base model is
converted again and no cached answer is reused), as on a new machine; --keep-cache reuses ~/.cache/locomlx.

    python scripts/reproduce.py                      # everything (timed in the README, on a 2-core CPU)
    python scripts/reproduce.py --list               # the steps and their commands
    python scripts/reproduce.py --only bench --only bench-eval

Training is not a step: `python scripts/build_swarm.py --retrain` rebuilds the adapters themselves.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from locomlx.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LOCOMLX = str(Path(sys.executable).parent / "locomlx")
CHAT_QUESTION = "Is this movie review positive or negative? A gorgeous, moving film with a wonderful cast."


@dataclass(frozen=True)
class Step:
    name: str
    what: str  # which numbers of the README it regenerates
    commands: tuple[tuple[str, ...], ...]


@dataclass
class Outcome:
    step: Step
    seconds: float = 0.0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.exit_codes)


STEPS = (
    Step("scores", "every adapter's scores (results.json, registry), promotion and the router's training",
         ((PYTHON, "scripts/build_swarm.py", "--reevaluate"),)),
    Step("leaderboard", "the leaderboard tables", ((LOCOMLX, "leaderboard", "--markdown", "docs/leaderboard.md"),)),
    Step("experiment", "the opening table: base, routed, oracle, RE2; routing, latency, memory",
         ((PYTHON, "scripts/swarm_experiment.py", "--limit", "100", "--latency-queries", "5"),)),
    Step("router-eval", "the routers' accuracy (held-out and shifted), confusion and misrouting cost",
         ((LOCOMLX, "router", "eval", "--limit", "100", "--max-tokens", "64", "--markdown", "docs/router_eval.md"),)),
    Step("feedback-study", "does feedback help the router on the shifted set (docs/research/feedback.md)",
         ((PYTHON, "scripts/research/feedback_study.py"),)),
    Step("enhancements", "the enhancement comparison table",
         ((PYTHON, "scripts/compare_enhancements.py", "sentiment-rt", "spam-assassin", "math-chainsum",
           "--limit", "30", "--max-tokens", "64", "--votes", "5"),)),
    Step("chat", "the routed answer `make chat` shows", ((LOCOMLX, "chat", CHAT_QUESTION),)),
    Step("bench", "`locomlx bench`: adapter switching, prefill and decode against transformers and llama.cpp",
         ((LOCOMLX, "bench"),)),
    Step("bench-cpu-ops", "the CPU kernels' speed and accuracy", ((PYTHON, "scripts/bench_cpu_ops.py"),)),
    Step("cpu-profile", "where prefill, decode and training spend their time, op by op",
         ((PYTHON, "scripts/profile_cpu.py"),)),
    Step("bench-eval", "evaluation throughput", ((PYTHON, "scripts/bench_eval.py"),)),
    Step("bench-train", "training throughput", ((PYTHON, "scripts/bench_train.py", "--steps", "20"),)),
    Step("bench-mixed-batch", "mixed-adapter batch throughput", ((PYTHON, "scripts/bench_mixed_batch.py"),)),
    Step("humaneval", "the base model's HumanEval pass@1",
         ((PYTHON, "scripts/data/humaneval.py", "data/humaneval.jsonl"),
          (LOCOMLX, "eval", "--benchmark", "data/humaneval.jsonl", "--max-tokens", "320"))),
)


def shown(command: tuple[str, ...]) -> str:
    """The command as a reader would type it in the repository (venv executables by their short name)."""
    short = ["python" if part == PYTHON else "locomlx" if part == LOCOMLX else part for part in command]
    return shlex.join(short)


def run_step(step: Step, log: Path, env: dict[str, str], cwd: Path) -> Outcome:
    """Run the step's commands in order (stopping at a failure), echoing their output and writing it to `log`."""
    outcome = Outcome(step)
    start = time.perf_counter()
    lines: list[str] = []
    for command in step.commands:
        lines.append(f"$ {shown(command)}\n")
        print(lines[-1], end="", flush=True)
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace")
            print(line, end="", flush=True)
            lines.append(line.rsplit("\r", 1)[-1])  # a progress line redrawn with \r: its final state
        outcome.exit_codes.append(process.wait())
        if outcome.exit_codes[-1] != 0:
            lines.append(f"[exit {outcome.exit_codes[-1]}]\n")
            break
    outcome.seconds = time.perf_counter() - start
    write_text_atomic(log, "".join(lines))
    return outcome


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def summary(outcomes: list[Outcome], total_seconds: float, fresh_cache: bool) -> str:
    rows = "\n".join(f"| {o.step.name} | {o.seconds / 60:.1f} | {'ok' if o.ok else 'FAILED'} | {o.step.what} | "
                     + "<br>".join(f"`{shown(c)}`" for c in o.step.commands[:len(o.exit_codes)]) + " |"
                     for o in outcomes)
    return f"""# Reproduction run

Written by `python scripts/reproduce.py`: every command whose output the README quotes, run one after the other.
Each step's full output is in this folder, in STEP.txt.

- finished: {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}, commit {commit()}
- machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}
- cache: {"empty at the start (a fresh LOCOMLX_CACHE: base model converted again, no answer reused)" if fresh_cache
          else "the existing ~/.cache/locomlx (--keep-cache)"}
- **total: {total_seconds / 60:.1f} minutes**

| step | minutes | status | regenerates | commands |
| --- | ---: | --- | --- | --- |
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=[s.name for s in STEPS], metavar="STEP",
                        help="Run only this step (repeatable); see --list.")
    parser.add_argument("--list", action="store_true", help="Print the steps and their commands, run nothing.")
    parser.add_argument("--keep-cache", action="store_true",
                        help="Reuse ~/.cache/locomlx (converted model, cached answers) instead of starting empty.")
    parser.add_argument("--out", default=str(ROOT / "docs" / "reproduce"), help="Folder for the logs and summary.")
    args = parser.parse_args()
    steps = [s for s in STEPS if not args.only or s.name in args.only]
    if args.list:
        for step in steps:
            print(f"{step.name}: {step.what}\n" + "".join(f"    {shown(c)}\n" for c in step.commands))
        return
    out = Path(args.out)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="locomlx-reproduce-") as fresh:
        if not args.keep_cache:
            env["LOCOMLX_CACHE"] = fresh
        start = time.perf_counter()
        outcomes = []
        for number, step in enumerate(steps, 1):
            print(f"\n=== [{number}/{len(steps)}] {step.name}: {step.what}", flush=True)
            outcomes.append(run_step(step, out / f"{step.name}.txt", env, ROOT))
            print(f"=== {step.name}: {'ok' if outcomes[-1].ok else 'FAILED'} in {outcomes[-1].seconds / 60:.1f} min "
                  f"({(time.perf_counter() - start) / 60:.1f} min so far)", flush=True)
        total = time.perf_counter() - start
    text = summary(outcomes, total, fresh_cache=not args.keep_cache)
    if len(steps) == len(STEPS):  # a partial run (--only) must not replace the full run's record
        write_text_atomic(out / "README.md", text)
    print(f"\n{text}")
    failed = [o.step.name for o in outcomes if not o.ok]
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (their output: {out}/STEP.txt)")


if __name__ == "__main__":
    main()
