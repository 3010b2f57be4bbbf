"""mlx.distributed: `eval --all` and `train` on two ring ranks over loopback give the one-process results; a
lost rank fails clearly and keeps what finished; the shard planner balances and reuses."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from locomlx.blas import ranks_on_this_host
from locomlx.distributed import World, broadcast_object, check_same, gather_objects
from locomlx.eval.shards import Shard, assign_shards

import mlx.core as mx
import numpy as np
import pytest

from tests import tiny
from tests.test_registry_fixtures import add_adapter, new_library

BIN = Path(sys.executable).parent
TIMING = {"seconds", "generation_seconds", "generation_tokens_per_second", "duration_seconds", "timestamp",
          "tokens_per_second"}
EVAL_ARGS = ["eval", "--all", "--limit", "24", "--max-tokens", "8", "--batch-size", "4"]


def _two_free_ports() -> int:
    """A port p with p and p + 1 free (the ring backend listens on one port per rank)."""
    for _ in range(100):
        port = random.randrange(20000, 60000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free ports")


def _launch(args, cwd, cache, ranks=2):
    """`mlx.launch --backend ring -n RANKS -- locomlx ARGS` on loopback, as a Popen."""
    command = [str(BIN / "mlx.launch"), "--backend", "ring", "-n", str(ranks), "--starting-port",
               str(_two_free_ports()), "--python", sys.executable, "--", str(BIN / "locomlx"), *args]
    return subprocess.Popen(command, cwd=cwd, env={**os.environ, "LOCOMLX_CACHE": str(cache)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(launched: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The launcher's output once it exits; past `timeout` the launcher and its ranks are killed (a hung ring
    must not outlive the test) and the timeout is raised."""
    try:
        return launched.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(launched.pid, signal.SIGKILL)
        launched.communicate()
        raise


def _alone(args, cwd, cache):
    return subprocess.run([str(BIN / "locomlx"), *args], cwd=cwd, env={**os.environ, "LOCOMLX_CACHE": str(cache)},
                          capture_output=True, text=True, timeout=600)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _files(root: Path) -> dict[str, object]:
    """Every file under root: JSON without its timing fields, other files as bytes."""
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        key = str(path.relative_to(root))
        found[key] = _without_timings(json.loads(path.read_text())) if path.suffix == ".json" else path.read_bytes()
    return found


def _registry_scores(library: Path) -> str:
    lines = (library / "registry.yaml").read_text().splitlines()
    return "\n".join(line for line in lines if "timestamp" not in line and "evaluated" not in line)


@pytest.fixture(scope="module")
def library_copies(tmp_path_factory, tiny_model):
    """The same two-adapter library, four times (one-process and two-rank runs; a lost-rank run and its
    reference)."""
    root = tmp_path_factory.mktemp("library")
    library = new_library(root / "first", tiny_model)
    add_adapter(library, tiny_model, "alpha", domain="sentiment", seed=1)
    add_adapter(library, tiny_model, "beta", domain="reviews", seed=2, keywords=("film",))
    for name in ("second", "third", "fourth"):
        shutil.copytree(root / "first", root / name, symlinks=True)
    return root


def test_eval_all_on_two_ranks_writes_what_one_process_writes(library_copies):
    one, two = library_copies / "first", library_copies / "second"
    alone = _alone(EVAL_ARGS, one, one / "cache")
    assert alone.returncode in (0, 2), alone.stderr
    launched = _launch(EVAL_ARGS, two, two / "cache")
    out, err = _finish(launched, 600)
    assert "on 2 ranks" in err and "rank 1 generated" in err, err
    assert "Traceback" not in err, err
    results = _files(one / "adapters")
    assert results == _files(two / "adapters")  # results.json, base/ood results, outputs.jsonl
    assert json.loads((one / "adapters/alpha/eval/results.json").read_text())["n_examples"] == 24
    assert _registry_scores(one / "adapters") == _registry_scores(two / "adapters")
    answers_one = {p.name: _without_timings(json.loads(p.read_text())) for p in (one / "cache/eval").glob("*.json")}
    answers_two = {p.name: _without_timings(json.loads(p.read_text())) for p in (two / "cache/eval").glob("*.json")}
    assert len(answers_one) == 6 and answers_one == answers_two  # 2 adapters x 2 benchmarks + the base on 2
    assert not list((two / "cache/eval/shards").glob("*.json"))  # joined into the answer caches
    assert out.count("PASS") + out.count("FAIL") == 2


def _rank_pid(rank: int, marker: str) -> int | None:
    """The pid of the rank-`rank` process whose environment holds `marker` (its LOCOMLX_CACHE)."""
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"MLX_RANK={rank}".encode() in environ and f"LOCOMLX_CACHE={marker}".encode() in environ:
            return int(proc.name)
    return None


def _kill_rank_one_after(launched, marker: Path, ready) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not ready():
        assert launched.poll() is None, launched.communicate()
        time.sleep(0.02)
    pid = _rank_pid(1, str(marker))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def _shards_of_rank(cache: Path, rank: int) -> list[Path]:
    found = []
    for path in (cache / "eval" / "shards").glob("*.json"):
        try:
            if json.loads(path.read_text())["rank"] == rank:
                found.append(path)
        except (OSError, ValueError):
            continue  # being replaced
    return found


def test_a_lost_rank_fails_clearly_and_a_rerun_redoes_only_what_is_missing(library_copies):
    three, four = library_copies / "third", library_copies / "fourth"
    before = _files(three / "adapters")
    args = ["eval", "--all", "--max-tokens", "16", "--batch-size", "2"]  # many small shards: time to kill one
    launched = _launch(args, three, three / "cache")
    _kill_rank_one_after(launched, three / "cache", lambda: _shards_of_rank(three / "cache", 1))
    out, err = _finish(launched, 300)
    assert "rank 0/2:" in err and "run the same command again" in err, err
    assert "Traceback" not in err, err
    assert _files(three / "adapters") == before  # nothing written to the library
    kept = list((three / "cache" / "eval" / "shards").glob("*.json"))
    assert _shards_of_rank(three / "cache", 1)  # rank 1's finished shards are kept
    rerun = _alone(args, three, three / "cache")
    assert rerun.returncode in (0, 2), rerun.stderr
    reused = int(rerun.stderr.split("reused ")[-1].split()[0])
    assert reused == len(kept) > 0, rerun.stderr
    reference = _alone(args, four, four / "cache")
    assert reference.returncode == rerun.returncode
    assert _files(three / "adapters") == _files(four / "adapters")


def test_data_parallel_training_follows_the_one_process_run_and_resumes(tmp_path, tiny_model):
    tiny.write_jsonl(tmp_path / "train.jsonl", tiny.sentiment_examples(120, 0))
    args = ["train", "--dataset", "train.jsonl", "--base-model", str(tiny_model), "--allow-small", "--epochs", "0.5",
            "--lora-rank", "4", "--batch-size", "4", "--steps-per-eval", "3", "--steps-per-save", "2",
            "--adapters-dir", str(tmp_path / "library")]
    single = _alone([*args, "--output", "one"], tmp_path, tmp_path / "cache")
    assert single.returncode == 0, single.stderr
    launched = _launch([*args, "--output", "two"], tmp_path, tmp_path / "cache")
    out, err = _finish(launched, 600)
    assert "Adapter written to two" in out, err
    log_one = (tmp_path / "one/training/TRAINING_LOG.md").read_text()
    log_two = (tmp_path / "two/training/TRAINING_LOG.md").read_text()
    assert "| ranks (data parallel, mlx.distributed) | 2 |" in log_two
    assert "| ranks (data parallel, mlx.distributed) | 1 |" in log_one

    def losses(log):
        rows = [line.split("|") for line in log.splitlines() if line.startswith("| ") and line.count("|") == 6]
        return [(int(r[1]), float(r[3])) for r in rows if r[1].strip().isdigit()]

    steps_one, steps_two = losses(log_one), losses(log_two)
    assert [s for s, _ in steps_one] == [s for s, _ in steps_two] and len(steps_one) >= 3
    np.testing.assert_allclose([v for _, v in steps_two], [v for _, v in steps_one], atol=1e-4)
    a = mx.load(str(tmp_path / "one/adapter_model.safetensors"))
    b = mx.load(str(tmp_path / "two/adapter_model.safetensors"))
    for key in a:
        np.testing.assert_allclose(np.array(b[key]), np.array(a[key]), atol=1e-5, err_msg=key)

    # A rank lost mid-run: rank 0 keeps a checkpoint, and --resume (here in one process) finishes the same run
    # as an uninterrupted one (a longer run, so that rank 1 is still training when it is killed).
    longer = [*args, "--epochs", "3"]
    uninterrupted = _launch([*longer, "--output", "four"], tmp_path, tmp_path / "cache")
    out, err = _finish(uninterrupted, 600)
    assert "Adapter written to four" in out, err
    launched = _launch([*longer, "--output", "three"], tmp_path, tmp_path / "cache")
    state = tmp_path / "three.partial" / "checkpoint" / "state.json"
    _kill_rank_one_after(launched, tmp_path / "cache", state.is_file)
    out, err = _finish(launched, 300)
    assert "error: rank 0/2" in err and "--resume" in err, err  # the ring's error, or mlx.launch's stop
    assert not (tmp_path / "three").exists()
    resumed = _alone([*longer, "--output", "three", "--resume"], tmp_path, tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr
    c = mx.load(str(tmp_path / "three/adapter_model.safetensors"))
    d = mx.load(str(tmp_path / "four/adapter_model.safetensors"))
    for key in d:
        np.testing.assert_allclose(np.array(c[key]), np.array(d[key]), atol=1e-5, err_msg=key)


def test_shards_go_to_their_holders_then_costliest_first_to_the_least_loaded():
    shards = [Shard(0, i, i + 1, cost) for i, cost in enumerate([5.0, 1.0, 4.0, 3.0, 3.0, 9.0])]
    held = [[False] * 6, [False] * 6, [False] * 6]
    held[2][5] = held[1][5] = True  # the costliest shard is cached on ranks 1 and 2
    owner = assign_shards(shards, held)
    assert owner[5] == 1  # the first holder provides it, at no cost
    load = [sum(s.cost for i, (s, o) in enumerate(zip(shards, owner)) if o == rank and i != 5) for rank in range(3)]
    assert sorted(load) == [5.0, 5.0, 6.0]  # 5 | 4+1 | 3+3: the best split of the rest
    assert assign_shards(shards, [[False] * 6]) == [0] * 6


def test_one_process_is_a_world_of_one(monkeypatch, tmp_path):
    world = World(None)
    assert gather_objects(world, {"a": [1]}) == [{"a": [1]}] and broadcast_object(world, 3) == 3
    check_same(world, "anything", [1, 2])
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([["127.0.0.1:5000"], ["127.0.0.1:5001"], ["10.0.0.2:5002"]]))
    monkeypatch.setenv("MLX_HOSTFILE", str(hostfile))
    monkeypatch.setenv("MLX_RANK", "1")
    assert ranks_on_this_host() == 2
    monkeypatch.setenv("MLX_RANK", "2")
    assert ranks_on_this_host() == 1
    monkeypatch.delenv("MLX_HOSTFILE")
    assert ranks_on_this_host() == 1


def test_eval_all_refuses_options_of_one_adapter(library_copies):
    result = _alone(["eval", "--all", "--benchmark", "x.jsonl", "--no-ood"], library_copies / "first",
                    library_copies / "first" / "cache")
    assert result.returncode == 1 and "drop --benchmark, --no-ood" in result.stderr, result.stderr
