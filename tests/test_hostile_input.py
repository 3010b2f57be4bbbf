"""Careless and hostile input: every case gets a clear error (file, line, field, fix) and leaves nothing broken;
none a traceback, a hang or silent acceptance. Property-based fuzzing (hypothesis) of the three readers of
untrusted bytes: `data check`, the registry loader and the archive checker."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from locomlx.cli import main
from locomlx.data.records import MAX_LINE_BYTES, read_examples
from locomlx.errors import LocomlxError
from locomlx.registry.archive import extract_archive
from locomlx.registry.install import AdapterInfo, install_adapter
from locomlx.registry.schema import parse_registry
from locomlx.registry.staging import claim_staging
from locomlx.registry.validate import validate_library
from locomlx.train.config import load_config
from locomlx.train.trainer import partial_dir, resumable, resume_config, train

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import tiny
from tests.test_registry_fixtures import snapshot, write_adapter

pytest_plugins = ["tests.test_registry_fixtures"]  # the `library` fixture
INFO = AdapterInfo("sentiment", keywords=["review"])
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,  # the same cases in every run and in CI
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _cli(*args):
    return CliRunner().invoke(main, list(args))


# --- the registry ---------------------------------------------------------------------------------------------

BILLION_LAUGHS = ('version: 2\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
                  + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")))


@pytest.mark.parametrize("text,message", [
    (BILLION_LAUGHS, "aliases (*name) are not allowed"),
    ("version: " + "[" * 100_000, "nested more than 32 levels"),
    ("version: " + "9" * 5000, "an integer is too long to read"),
])
def test_a_hostile_registry_is_refused_at_once(library, text, message):
    (library / "registry.yaml").write_text(text)
    start = time.perf_counter()
    result = _cli("registry", "validate", "--adapters-dir", str(library))
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert time.perf_counter() - start < 5


# --- data files -------------------------------------------------------------------------------------------------

def test_broken_data_lines_are_named_and_bounded(tmp_path):
    path = tmp_path / "data.jsonl"
    good = json.dumps({"instruction": "Say hi", "input": "", "output": "hi"})
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"instruction": "a\\ud800", "input": "", "output": "b"}\n')
        f.write("[" * 100_000 + "\n")
        f.write('{"instruction": "' + "x" * (MAX_LINE_BYTES + 10) + '", "input": "", "output": "y"}\n')
        f.write('{"instruction": "pick", "input": "", "output": "a", "choices": ["a", 2]}\n')
        f.write(good + "\n")
    examples, problems = read_examples(path)
    assert [e.line for e in examples] == [5]
    assert [(p.line, p.field) for p in problems] == [(1, None), (2, None), (3, None), (4, "choices")]
    assert "lone surrogate" in problems[0].message and "nested too deeply" in problems[1].message
    assert "longer than 1 MB" in problems[2].message and "non-empty strings" in problems[3].message
    result = _cli("data", "check", str(tmp_path))
    assert result.exit_code == 1 and "is a folder, not a JSONL file" in result.output


def test_eval_warns_below_fifty_examples_and_checks_fields_before_generating(tiny_model, tmp_path):
    small = tiny.write_jsonl(tmp_path / "small.jsonl", tiny.sentiment_examples(20, 0))
    result = _cli("eval", "--benchmark", str(small), "--base-model", str(tiny_model), "--max-tokens", "2")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "20 examples" in result.output and "at least 50" in result.output
    rows = tiny.sentiment_examples(60, 0)
    rows[30]["choices"] = ["positive", 7]
    bad = tiny.write_jsonl(tmp_path / "bad.jsonl", rows)
    start = time.perf_counter()
    result = _cli("eval", "--benchmark", str(bad), "--base-model", str(tiny_model))
    assert result.exit_code == 1 and "bad.jsonl:31" in result.output and "choices" in result.output
    assert time.perf_counter() - start < 30  # refused when read, not after every answer was generated


# --- installs -------------------------------------------------------------------------------------------------

def _rewrite_weights(folder: Path, change) -> None:
    path = folder / "adapter_model.safetensors"
    tensors = dict(mx.load(str(path)))
    mx.save_safetensors(str(path), change(tensors))


def _nan(tensors):
    key = next(iter(tensors))
    return {**tensors, key: tensors[key] * float("nan")}


def _integers(tensors):
    return {k: v.astype(mx.int32) for k, v in tensors.items()}


def _rank0(tensors):
    return {k: (v[:, :0] if k.endswith("lora_a") else v[:0]) for k, v in tensors.items()}


def _config_field(**lora):
    def change(folder):
        config = json.loads((folder / "adapter_config.json").read_text())
        config["lora_parameters"].update(lora)
        (folder / "adapter_config.json").write_text(json.dumps(config))
    return change


@pytest.mark.parametrize("damage,message", [
    (lambda f: _rewrite_weights(f, _nan), "NaN or infinite weights"),
    (lambda f: _rewrite_weights(f, _integers), "int32 weights"),
    (lambda f: _rewrite_weights(f, _rank0), "rank 0"),
    (_config_field(scale=float("inf")), "'lora_parameters.scale' must be a number"),
    (_config_field(scale=1e9), "beyond 1000"),
    (_config_field(scale="2.0"), "'lora_parameters.scale' must be a number"),
    (_config_field(rank=[4]), "'lora_parameters.rank' must be a positive number"),
    (lambda f: (f / "adapter_config.json").write_text("[1, 2]"), "must be a JSON object"),
    (lambda f: os.mkfifo(f / "pipe"), "'pipe' is not a regular file"),
    (lambda f: (f / "eval" / "benchmark.jsonl").unlink(), "has no eval/benchmark.jsonl"),
])
def test_an_adapter_that_cannot_work_is_refused_naming_the_source(library, tiny_model, tmp_path, damage, message):
    source = write_adapter(tmp_path / "outside" / "broken", tiny_model, seed=4)
    damage(source)
    before = snapshot(library)
    with pytest.raises(LocomlxError, match=message) as refused:
        install_adapter(str(source), library, INFO)
    assert ".install-" not in str(refused.value) and "nothing was installed" in str(refused.value)
    assert snapshot(library) == before and validate_library(library) == []


def test_abandoned_staging_is_reported_then_removed_but_a_running_install_keeps_its_own(library, tiny_model,
                                                                                       tmp_path):
    dead = library / ".install-dead"
    (dead / "content").mkdir(parents=True)
    (dead / "content" / "big.bin").write_bytes(b"x" * 100_000)
    (dead / ".owner").touch()  # its install was killed: nobody holds the lock
    running, owner = claim_staging(library)  # another install, still running
    try:
        warnings = [p for p in validate_library(library) if p.severity == "warning"]
        assert len(warnings) == 1 and "1 staging folders of interrupted installs" in warnings[0].message
        install_adapter(str(write_adapter(tmp_path / "outside" / "ok", tiny_model, seed=4)), library, INFO)
        assert not dead.exists() and running.exists()
    finally:
        os.close(owner)
        shutil.rmtree(running)
    assert validate_library(library) == []


def _read_only(path: Path, *command: str) -> subprocess.CompletedProcess:
    """Run the CLI with `path` read-only: a read-only bind mount (root ignores file modes), else chmod."""
    locomlx = str(Path(sys.executable).parent / "locomlx")
    if os.geteuid() == 0:
        if not shutil.which("bwrap"):
            pytest.skip("needs bubblewrap to make a read-only library as root")
        argv = ["bwrap", "--bind", "/", "/", "--ro-bind", str(path), str(path), "--dev", "/dev", "--proc", "/proc",
                locomlx, *command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300)
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        return subprocess.run([locomlx, *command], capture_output=True, text=True, timeout=300)
    finally:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_a_read_only_library_gets_a_clear_error(library, tiny_model, tmp_path):
    install_adapter(str(write_adapter(tmp_path / "outside" / "one", tiny_model, seed=4)), library, INFO)
    other = write_adapter(tmp_path / "outside" / "two", tiny_model, seed=5)
    for command in (["adapters", "install", str(other), "--domain", "sentiment"], ["adapters", "remove", "one"],
                    ["promote", "one"]):
        result = _read_only(library, *command, "--adapters-dir", str(library))
        assert result.returncode == 1, (command, result.stderr)
        assert "error:" in result.stderr and "Traceback" not in result.stderr, (command, result.stderr)
    assert validate_library(library) == []


# --- training -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_examples(120, 0))


def _config(tiny_model, dataset, out):
    return load_config(None, {"dataset": str(dataset), "output": str(out), "base_model": str(tiny_model),
                              "allow_small": True, "epochs": 0.5, "lora_rank": 4, "steps_per_eval": 5,
                              "steps_per_save": 3, "adapters_dir": str(out.parent)})


def test_ctrl_c_inside_a_step_checkpoints_a_consistent_state(tiny_model, train_data, tmp_path, monkeypatch):
    """Ctrl-C between the optimizer's update and the step counter's: the resumed run equals an uninterrupted one."""
    from locomlx.train import loop

    full = train(_config(tiny_model, train_data, tmp_path / "full")).output
    calls = {"n": 0}
    real = time.perf_counter

    class Clock:
        @staticmethod
        def perf_counter():
            calls["n"] += 1
            if calls["n"] == 14:  # step 7's second reading: right after the update, before step += 1
                os.kill(os.getpid(), signal.SIGINT)
            return real()

    monkeypatch.setattr(loop, "time", Clock)
    with pytest.raises(loop.TrainingInterrupted, match="step 7"):
        train(_config(tiny_model, train_data, tmp_path / "cut"))
    monkeypatch.undo()
    assert resumable(tmp_path / "cut")
    with pytest.raises(LocomlxError, match="An interrupted run exists"):  # a plain rerun never discards it
        train(_config(tiny_model, train_data, tmp_path / "cut"))
    resumed = train(resume_config(tmp_path / "cut"), resume=True).output
    a, b = mx.load(str(full / "adapter_model.safetensors")), mx.load(str(resumed / "adapter_model.safetensors"))
    for key in a:
        np.testing.assert_allclose(np.array(a[key]), np.array(b[key]), rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_run_killed_before_its_first_checkpoint_starts_over(tiny_model, train_data, tmp_path):
    """A run killed while it loaded (before any step was saved) leaves only its recorded config: --resume has
    nothing to continue, so a plain rerun trains afresh instead of asking for --resume."""
    out = tmp_path / "run"
    (partial_dir(out) / "training").mkdir(parents=True)
    (partial_dir(out) / "training" / "train_config.yaml").write_text("config: {}\n")
    assert not resumable(out)
    with pytest.raises(LocomlxError, match="No checkpoint to resume from"):
        train(_config(tiny_model, train_data, out), resume=True)
    assert (train(_config(tiny_model, train_data, out)).output / "adapter_config.json").is_file()
    assert not partial_dir(out).exists()


def test_resume_refuses_a_changed_dataset(tiny_model, train_data, tmp_path):
    from locomlx.train.loop import TrainingInterrupted

    dataset = tmp_path / "train.jsonl"
    shutil.copy(train_data, dataset)

    def stop(state, point):
        if state.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(_config(tiny_model, dataset, tmp_path / "run"), on_progress=stop)
    rows = dataset.read_text().splitlines()
    dataset.write_text("\n".join(rows[::-1]) + "\n")
    with pytest.raises(LocomlxError, match=r"changed since this run started \(sha256 [0-9a-f]{12}.* now\)"):
        train(resume_config(tmp_path / "run"), resume=True)


# --- fuzzing --------------------------------------------------------------------------------------------------

_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                     max_size=5), max_leaves=20)
_FIELDS = st.fixed_dictionaries({}, optional={k: _JSONISH for k in ("instruction", "input", "output", "choices",
                                                                        "metric", "tests", "id", "extra")})


@FUZZ
@given(st.lists(st.binary(max_size=200) | _FIELDS.map(lambda d: json.dumps(d).encode()), max_size=8))
def test_fuzz_data_check_never_raises(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    examples, problems = read_examples(path)
    assert all(p.message for p in problems)
    assert len(examples) + len(problems) >= 1


_REGISTRY = ("version: 2\nbase_model: {id: tiny, quantization: none, academic_year: 2026-27, file_sha256: '"
             + "0" * 64 + "'}\nadapters:\n  a: {domain: sentiment, version: 1.0.0, path: a, active: true}\n")


@FUZZ
@given(st.text(max_size=300) | st.tuples(st.integers(0, len(_REGISTRY)), st.text(max_size=30)).map(
    lambda cut: _REGISTRY[:cut[0]] + cut[1] + _REGISTRY[cut[0]:]))
def test_fuzz_registry_loader_never_raises(text):
    registry, problems = parse_registry(text)
    assert all(p.message for p in problems)


def _archive_of(data: bytes, suffix: str) -> bytes:
    name, body = data[:40].decode("latin-1").replace("\x00", "_") or "x", data[40:]
    buffer = io.BytesIO()
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr(name.rstrip("/") or "x", body)
        else:
            with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                info = tarfile.TarInfo(name)
                info.size = len(body)
                archive.addfile(info, io.BytesIO(body))
    except (ValueError, OSError):  # a name the writer itself refuses: fuzz the raw bytes instead
        return data
    return buffer.getvalue()


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from([".zip", ".tar.gz"]))
def test_fuzz_archive_checker_refuses_cleanly(tmp_path, data, suffix):
    if len(data) % 2:  # structured half the time: a real archive with a random member name and body
        data = _archive_of(data, suffix)
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    dest = tmp_path / "out"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    try:
        extract_archive(path, dest)
    except LocomlxError:
        pass
    for landed in dest.rglob("*"):
        assert os.path.realpath(landed).startswith(os.path.realpath(dest))
