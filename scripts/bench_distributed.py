#!/usr/bin/env python3
"""`locomlx eval --all` and `locomlx train` at 1, 2 and 4 mlx.distributed ranks on this machine, against one
process, on the shipped library and the embedded base model.

Each `eval --all` run works on its own copy of the shipped library with its own empty cache (the shipped
results are never touched); the script checks that every run under `mlx.launch` wrote the same files as
the one-process run (timing fields aside) and times each. Training runs a short stretch of the sentiment
adapter's recipe at the same global batch and compares the loss curves. All ranks run on this one host
(loopback, ring backend), so they share its cores: the figures say what sharding costs or saves here,
not what a lab of machines would gain, where each rank has a machine of its own.

    python scripts/bench_distributed.py                  # writes docs/distributed-bench.md
    python scripts/bench_distributed.py --ranks 1,2 --limit 4 --train-epochs 0.02 --output /tmp/d.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMING = {"seconds", "generation_seconds", "generation_tokens_per_second", "duration_seconds", "timestamp",
          "tokens_per_second"}
TRAIN_ADAPTER = "sentiment-rt-spring"


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def eval_files(library: Path) -> dict[str, object]:
    """What eval --all writes: every adapter's eval/ JSON (timings aside) and outputs, and the registry's scores."""
    found = {}
    for path in sorted(library.glob("*/eval/*")):
        if path.suffix == ".json":
            found[str(path.relative_to(library))] = without_timings(json.loads(path.read_text()))
        elif path.suffix == ".jsonl" and path.name != "benchmark.jsonl":
            found[str(path.relative_to(library))] = path.read_text()
    found["registry scores"] = "\n".join(line for line in (library / "registry.yaml").read_text().splitlines()
                                         if "timestamp" not in line)
    return found


def command(ranks: int, args: list[str]) -> list[str]:
    locomlx = [str(BIN / "locomlx"), *args]
    if ranks == 1:
        return locomlx
    return [str(BIN / "mlx.launch"), "--backend", "ring", "-n", str(ranks), "--python", sys.executable, "--",
            *locomlx]


def timed(cmd: list[str], cwd: Path, cache: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env={**os.environ, "LOCOMLX_CACHE": str(cache)}, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if "Traceback" in done.stderr or done.returncode not in (0, 2):
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def copy_library(work: Path, name: str, base_cache: Path) -> tuple[Path, Path]:
    """A copy of the shipped library (eval/ results removed, so nothing is served stale), and a cache holding
    only the converted base model."""
    root = work / name
    shutil.copytree(ROOT / "adapters", root / "adapters", symlinks=True,
                    ignore=shutil.ignore_patterns("results.json", "base_results.json", "ood_results.json",
                                                  "outputs.jsonl", "enhanced", "ood"))
    cache = root / "cache"
    shutil.copytree(base_cache, cache)
    return root, cache


def losses(log: str) -> list[tuple[int, float]]:
    rows = [line.split("|") for line in log.splitlines() if line.startswith("| ") and line.count("|") == 6]
    return [(int(r[1]), float(r[3])) for r in rows if r[1].strip().isdigit()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2,4", help="Rank counts to run [1,2,4]; 1 is the reference.")
    parser.add_argument("--limit", type=int, default=20, help="Examples per benchmark [20].")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--train-epochs", type=float, default=0.1, help="Training stretch, in epochs [0.1].")
    parser.add_argument("--output", default=str(ROOT / "docs" / "distributed-bench.md"))
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        work = Path(tmp)
        base_cache = work / "base-cache"
        subprocess.run([str(BIN / "locomlx"), "chat", "--adapter", "none", "--max-tokens", "1", "Hi"],
                       env={**os.environ, "LOCOMLX_CACHE": str(base_cache)}, capture_output=True, check=True)
        eval_rows, reference = [], None
        eval_args = ["eval", "--all", "--limit", str(args.limit), "--max-tokens", str(args.max_tokens)]
        for n in ranks:
            root, cache = copy_library(work, f"eval-{n}", base_cache)
            seconds, log = timed(command(n, eval_args), root, cache)
            files = eval_files(root / "adapters")
            reference = reference or files
            eval_rows.append((n, seconds, files == reference, log))
            print(f"eval --all on {n} rank(s): {seconds:.0f} s, same files: {files == reference}", file=sys.stderr)

        dataset = ROOT / "adapters" / TRAIN_ADAPTER / "training" / "dataset.jsonl"
        train_rows, reference_losses = [], None
        for n in ranks:
            out = work / f"train-{n}"
            train_args = ["train", "--dataset", str(dataset), "--output", str(out / "adapter"), "--epochs",
                          str(args.train_epochs), "--batch-size", "8", "--steps-per-eval", "2",
                          "--adapters-dir", str(out / "library")]
            seconds, _ = timed(command(n, train_args), work, base_cache)
            curve = losses((out / "adapter" / "training" / "TRAINING_LOG.md").read_text())
            reference_losses = reference_losses or curve
            gap = max(abs(a[1] - b[1]) for a, b in zip(curve, reference_losses))
            train_rows.append((n, seconds, len(curve), gap))
            print(f"train on {n} rank(s): {seconds:.0f} s, largest loss gap {gap:.2g}", file=sys.stderr)

    one_eval, one_train = eval_rows[0][1], train_rows[0][1]
    lines = [
        "# mlx.distributed on one machine: eval --all and training at 1, 2 and 4 ranks",
        "",
        f"Written by `python scripts/bench_distributed.py --ranks {args.ranks} --limit {args.limit} --max-tokens "
        f"{args.max_tokens} --train-epochs {args.train_epochs}` on {dt.date.today().isoformat()}, "
        f"{os.cpu_count()} CPUs, the embedded SmolLM2-135M. Every rank runs on this host (ring backend over "
        "loopback), so the ranks share its cores: this measures what sharding costs here and shows the results "
        "are the same, not what a lab of machines gains (there each rank has a machine of its own).",
        "",
        f"## `locomlx eval --all` on the shipped library ({args.limit} examples per benchmark)",
        "",
        "| ranks | wall time | vs one process | same files and scores as one process |",
        "|---:|---:|---:|---|",
        *[f"| {n} | {s:.0f} s | {one_eval / s:.2f}x | {'yes' if same else '**no**'} |"
          for n, s, same, _ in eval_rows],
        "",
        "\"Same files\": every adapter's eval/results.json, base_results.json, ood_results.json and outputs.jsonl, "
        "and the registry's scores, equal to the last digit (timings aside).",
        "",
        f"## `locomlx train`, {TRAIN_ADAPTER}'s data, global batch 8, {args.train_epochs} epoch",
        "",
        "| ranks | wall time | vs one process | loss points "
        "| largest train-loss gap to one process (the log's 4 decimals) |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {n} | {s:.0f} s | {one_train / s:.2f}x | {points} | {gap:.2g} |" for n, s, points, gap in train_rows],
        "",
        "Wall times include loading the base model on every rank. On shared cores training gains nothing: every "
        "rank computes the full validation loss and the ranks exchange gradients at every step, while the "
        "cores do no more work in total.",
        "",
    ]
    Path(args.output).write_text("\n".join(lines))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
