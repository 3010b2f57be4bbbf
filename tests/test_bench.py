"""`locomlx bench`'s llama.cpp row (the real worker on the embedded GGUF, in its own process, as the bench runs
it), the memory-bandwidth measurement behind the physical-limit line, and the report that prints both."""

import importlib.util

from locomlx.bench import (
    PATHS,
    BenchSettings,
    _run_worker,
    alternating_rounds,
    format_report,
    memory_bandwidth,
    merged_rounds,
)

import pytest


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="needs llama-cpp-python (pip install -e .[llama]: builds llama.cpp)")
def test_the_llama_cpp_worker_times_the_embedded_gguf(real_model):
    result = _run_worker("llamacpp", BenchSettings(real_model, prompt_tokens=32, decode_tokens=8, repeats=1))
    assert result["prefill_tps"] > 0 and result["decode_tps"] > 0 and result["peak_memory_mb"] > 50
    assert 90e6 < result["weight_bytes"] < 100e6  # the Q4_1 file's tensors: 96.6 MB, not 538 MB of float32


def test_memory_bandwidth_is_measured_with_one_and_all_threads():
    measured = memory_bandwidth(megabytes=32, repeats=2)
    assert measured["bytes_per_second"] == max(measured["single_thread"], measured["all_cores"]) > 1e8


def test_the_report_prints_the_llama_cpp_row_and_the_physical_limit():
    row = {"prefill_tps": 400.0, "decode_tps": 30.0, "peak_memory_mb": 1000.0}
    results = {"machine": {"platform": "test", "cpus": 2}, "settings": BenchSettings().__dict__,
               "adapters": {"rank": 8, "layers": 210, "resident_switch_seconds": 5e-8, "load_from_disk_seconds": 0.01,
                            "naive_reload_seconds": 1.4, "naive_mlx_lm_4bit_reload_seconds": 0.7},
               "inference": {"default": dict(row, weight_bytes=538e6), "plain": dict(row, weight_bytes=100e6),
                             "llamacpp": dict(row, decode_tps=60.0, weight_bytes=96.6e6)},
               "bandwidth": {"bytes_per_second": 10.76e9, "threads": 2}}
    report = format_report(results)
    assert PATHS["llamacpp"]["label"] in report and "default / llamacpp" in report
    assert "0.50x" in report  # decode: 30 against llama.cpp's 60
    assert "memory bandwidth 10.8 GB/s" in report
    limit_row = [line for line in report.splitlines() if line.strip().startswith("locomlx default")][-1]
    assert "538.0" in limit_row and "20.0" in limit_row and "150%" in limit_row  # 10.76e9 / 538e6 = 20 tok/s


def test_a_path_over_rounds_reports_its_median_speeds_and_its_highest_peak_memory():
    runs = [{"prefill_tps": p, "decode_tps": d, "peak_memory_mb": m, "weight_bytes": 1}
            for p, d, m in ((300.0, 40.0, 900.0), (450.0, 35.0, 1200.0), (400.0, 50.0, 1000.0))]
    merged = merged_rounds(runs)
    assert (merged["prefill_tps"], merged["decode_tps"], merged["peak_memory_mb"]) == (400.0, 40.0, 1200.0)
    assert [r["prefill_tps"] for r in merged["rounds"]] == [300.0, 450.0, 400.0] and merged["weight_bytes"] == 1


def test_rounds_alternate_their_order_so_drift_weighs_on_every_engine_alike():
    assert list(alternating_rounds(["a", "b", "c"], 3)) == [(1, "a"), (1, "b"), (1, "c"), (2, "c"), (2, "b"),
                                                            (2, "a"), (3, "a"), (3, "b"), (3, "c")]


def test_the_cpu_profile_runs_quick_and_accounts_for_every_op(real_model, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "profile.md"
    script = Path(__file__).resolve().parents[1] / "scripts" / "profile_cpu.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for section in ("## prefill", "## decode step", "## batched decode step", "## training step (",
                    "## training step, whole"):
        assert section in text
    for op in ("| q_proj |", "| attention core |", "| lm head |", "| rms norm |", "| forward + backward |"):
        assert op in text
    training = text.split("## training step (")[1].split("## training step, whole")[0]
    assert "| op | forward ms | backward ms |" in training
    for op in ("q_proj", "gate_proj", "mlp activation", "attention core", "lm head", "cross-entropy loss"):
        assert f"| {op} |" in training  # every op of a step, the head and the loss included, has its backward
    assert "python scripts/profile_cpu.py --quick" in text
