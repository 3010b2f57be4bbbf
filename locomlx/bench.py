"""`locomlx bench`: engine speed on the embedded model, each figure beside a peer measured in the same run.

- adapters: resident switch and load-from-disk against the naive path (reload base + adapter);
- inference: prefill and decode tok/s and peak memory of the default CPU path (float32 weights
  + preloaded CBLAS) against the plain path (4-bit weights, MLX's bundled BLAS), and, when
  `transformers` and `torch` are installed, against transformers on the same weights, and, when
  `llama-cpp-python` is installed, against llama.cpp on the very GGUF file the base model comes from;
- the physical limit: decode reads every weight once per token, so no path can decode faster than
  the memory bandwidth (measured here by a STREAM-like copy) divided by its weight bytes.

Each inference path runs in its own subprocess: the CBLAS preload is process-wide and
cannot be undone, and peak memory must be per path. Paths run once per round, rounds in alternating
order, and speeds are the median over rounds: on a shared machine one run can drift 15% from the next.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PATHS = {
    "default": {"compute_dtype": "auto", "label": "locomlx default (float32 + CBLAS)"},
    "plain": {"compute_dtype": "quantized", "label": "plain MLX (4-bit, bundled BLAS)"},
    "transformers": {"label": "transformers + torch (float32, same weights)"},
    "llamacpp": {"label": "llama.cpp (the same GGUF file)"},
}


@dataclass
class BenchSettings:
    base_model: str | None = None
    prompt_tokens: int = 512
    decode_tokens: int = 128
    repeats: int = 3
    rounds: int = 3  # runs of every path but the plain one, in alternating order: single runs drift by ~15% here


def _prompt_ids(vocab_size: int, n: int) -> list[int]:
    """A deterministic pseudo-random prompt (content does not matter for speed)."""
    return [(i * 7919 + 13) % (vocab_size - 100) + 50 for i in range(n)]


def _peak_rss_mb() -> float:
    from locomlx.engine.engine import peak_memory_mb

    return peak_memory_mb()


def _speeds(settings: BenchSettings, prefill, decode_seconds) -> dict:
    """Tokens/s of a path's prefill and decode: one warm-up each, then the median of `repeats` timed runs."""
    prefill()
    prefill_s = statistics.median(prefill() for _ in range(settings.repeats))
    decode_seconds()
    decode_s = statistics.median(decode_seconds() for _ in range(settings.repeats))
    return {"prefill_tps": settings.prompt_tokens / prefill_s, "decode_tps": settings.decode_tokens / decode_s}


def _mlx_worker(settings: BenchSettings, compute_dtype: str) -> dict:
    from locomlx import blas
    from locomlx.engine.decode import DecodeStats, decode
    from locomlx.engine.engine import Engine
    from locomlx.models.load import compute_stream
    from locomlx.models.packed import decode_weight_bytes, uses_packed_weights

    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    start = time.perf_counter()
    engine = Engine.load(settings.base_model, compute_dtype)
    load_seconds = time.perf_counter() - start
    model = engine.model
    tokens = mx.array(_prompt_ids(engine.base.text_config["vocab_size"], settings.prompt_tokens))

    def prefill() -> float:
        cache = make_prompt_cache(model)
        t = time.perf_counter()
        mx.eval(model(tokens[None], cache=cache))
        return time.perf_counter() - t

    def decode_seconds() -> float:
        stats = DecodeStats()
        steps = decode(model, tokens[:16].tolist(), max_tokens=settings.decode_tokens + 1,
                       sampler=lambda x: mx.argmax(x, -1), stop_tokens=(), decoder=engine.decoder, stats=stats)
        with mx.stream(compute_stream()):
            for _ in steps:
                pass
        return stats.generation_seconds

    return {
        "compute_dtype": engine.base.compute_dtype,
        "weight_bytes": decode_weight_bytes(model),
        "packed_decode": uses_packed_weights(model),
        "blas": blas.preload().path,
        "load_seconds": load_seconds,
        **_speeds(settings, prefill, decode_seconds),
        "peak_memory_mb": _peak_rss_mb(),
    }


def transformers_twin(base_model: str | None):
    """transformers' causal LM of the model's own type holding the very weights locomlx computes with
    (dequantized to float32).

    The peer of every benchmark against torch: same weights, so only the engines differ.
    Returns (model, its config dict, seconds spent building it).
    """
    from locomlx.errors import LocomlxError
    from locomlx.models.load import load_base
    from locomlx.models.resolve import resolve_model

    import numpy as np
    import torch
    from mlx.utils import tree_flatten
    from transformers import AutoConfig, AutoModelForCausalLM

    base = load_base(resolve_model(base_model), "float32")
    state = {k: torch.from_numpy(np.array(v)) for k, v in tree_flatten(base.model.parameters())}
    config = {k: v for k, v in base.config.items() if k not in ("quantization", "locomlx_source")}
    start = time.perf_counter()
    kind = config.pop("model_type", "llama")
    config["tie_word_embeddings"] = not any(k.endswith("lm_head.weight") for k in state)
    config.setdefault("pad_token_id", None)  # transformers' defaults (e.g. phi3's 32000) may lie outside the vocabulary
    if "sliding_window_pattern" in config:  # mlx-lm's Gemma 3 field; transformers reads the pattern as layer_types
        pattern = config["sliding_window_pattern"]
        config.setdefault("layer_types", ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                                          for i in range(config["num_hidden_layers"])])
    try:
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **config), dtype=torch.float32)
    except (ValueError, KeyError) as exc:
        raise LocomlxError(f"transformers has no causal LM for model type '{kind}': {exc}") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise LocomlxError(f"the {kind} weights do not line up with transformers' {type(model).__name__}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config["tie_word_embeddings"]:
        model.tie_weights()
    return model, {**config, "model_type": kind}, time.perf_counter() - start


def _transformers_worker(settings: BenchSettings) -> dict:
    import torch

    model, config, load_seconds = transformers_twin(settings.base_model)
    model.eval()
    tokens = torch.tensor([_prompt_ids(config["vocab_size"], settings.prompt_tokens)])

    def prefill() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model(tokens, use_cache=True)
        return time.perf_counter() - t

    def decode_seconds() -> float:
        prompt = tokens[:, :16]
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(prompt, max_new_tokens=1, min_new_tokens=1, do_sample=False)
            first = time.perf_counter() - t0
            t = time.perf_counter()
            model.generate(prompt, max_new_tokens=settings.decode_tokens + 1, min_new_tokens=settings.decode_tokens + 1,
                           do_sample=False)
            return time.perf_counter() - t - first

    return {
        "compute_dtype": "float32",
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_seconds": load_seconds,
        **_speeds(settings, prefill, decode_seconds),
        "peak_memory_mb": _peak_rss_mb(),
    }


def _llamacpp_worker(settings: BenchSettings) -> dict:
    """llama.cpp on the base model's own GGUF file: greedy decode token by token, as the MLX paths do."""
    from locomlx.models.resolve import gguf_source

    import gguf
    import numpy as np
    from llama_cpp import Llama

    path = gguf_source(settings.base_model)
    threads = os.cpu_count() or 1
    start = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=settings.prompt_tokens + settings.decode_tokens + 32,
                n_batch=max(512, settings.prompt_tokens), n_threads=threads, n_threads_batch=threads, verbose=False)
    load_seconds = time.perf_counter() - start
    ids = _prompt_ids(llm.n_vocab(), settings.prompt_tokens)

    def prefill() -> float:
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        return time.perf_counter() - t

    def decode_seconds() -> float:
        llm.reset()
        llm.eval(ids[:16])
        t = time.perf_counter()
        for _ in range(settings.decode_tokens):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        return time.perf_counter() - t

    return {
        "compute_dtype": "as stored in the GGUF",
        "weight_bytes": sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors),
        "threads": threads,
        "load_seconds": load_seconds,
        **_speeds(settings, prefill, decode_seconds),
        "peak_memory_mb": _peak_rss_mb(),
    }


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> dict:
    """Bytes per second a STREAM-like copy moves (read + write), best of `repeats`, with one thread and with one
    thread per core (numpy's copy releases the GIL); the larger is the machine's usable bandwidth."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    source = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    target = np.empty_like(source)
    threads = os.cpu_count() or 1
    parts = np.array_split(np.arange(len(source)), threads)
    bounds = [(p[0], p[-1] + 1) for p in parts if len(p)]

    def copy_part(bound):
        np.copyto(target[bound[0]:bound[1]], source[bound[0]:bound[1]])

    def best(run) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        return 2 * source.nbytes / min(times)

    single = best(lambda: np.copyto(target, source))
    with ThreadPoolExecutor(threads) as pool:
        parallel = best(lambda: list(pool.map(copy_part, bounds)))
    return {"single_thread": single, "all_cores": parallel, "bytes_per_second": max(single, parallel),
            "threads": threads}


def _adapter_times(settings: BenchSettings, rank: int = 8, n_adapters: int = 4) -> dict:
    """Resident switch vs load from disk vs naive reload, on random rank-8 adapters over every linear layer."""
    from locomlx.engine.engine import Engine

    import mlx.core as mx
    from mlx_lm import load as mlx_lm_load

    engine = Engine.load(settings.base_model)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [_random_adapter(Path(tmp) / f"a{i}", engine, rank, seed=i) for i in range(n_adapters)]
        load_times = []
        for path in paths:
            load_times.append(engine.load_adapter(path).load_seconds)
        engine.unload_adapter(paths[0].name)
        load_times.append(engine.load_adapter(paths[0]).load_seconds)
        names = list(engine.adapters)
        switches = []
        for i in range(2000):
            switches.append(engine.select(names[i % len(names)]))
        # Naive: what a one-model-per-process server does to change adapter.
        naive_default, naive_mlx_lm = [], []
        for path in paths[:2]:
            t = time.perf_counter()
            fresh = Engine.load(settings.base_model)
            fresh.load_adapter(path)
            naive_default.append(time.perf_counter() - t)
            t = time.perf_counter()
            model, _ = mlx_lm_load(str(fresh.base.resolved.path), adapter_path=str(path))
            mx.eval(model.parameters())
            naive_mlx_lm.append(time.perf_counter() - t)
            del fresh, model
    return {
        "rank": rank,
        "layers": len(engine.adapters[names[0]].modules),
        "num_hidden_layers": len(engine.model.layers),
        "resident_switch_seconds": statistics.median(switches),
        "load_from_disk_seconds": statistics.median(load_times),
        "naive_reload_seconds": statistics.median(naive_default),
        "naive_mlx_lm_4bit_reload_seconds": statistics.median(naive_mlx_lm),
    }


def _random_adapter(path: Path, engine, rank: int, seed: int) -> Path:
    from locomlx.models.anatomy import block_linears
    from locomlx.models.layers import linear_dims

    import mlx.core as mx
    import mlx.nn as nn

    mx.random.seed(seed)
    keys = block_linears(engine.model)
    tensors = {}
    for name, module in engine.model.named_modules():
        if any(name.endswith(k) for k in keys) and isinstance(module, (nn.Linear, nn.QuantizedLinear)):
            in_dims, out_dims = linear_dims(module)
            tensors[f"{name}.lora_a"] = mx.random.normal((in_dims, rank)) * 0.01
            tensors[f"{name}.lora_b"] = mx.random.normal((rank, out_dims)) * 0.01
    path.mkdir(parents=True)
    mx.save_safetensors(str(path / "adapters.safetensors"), tensors)
    (path / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "lora", "num_layers": len(engine.model.layers),
        "lora_parameters": {"rank": rank, "scale": 2.0, "dropout": 0.0, "keys": keys}}))
    return path


def run_isolated(args: list[str], without_blas: bool = False, env: dict[str, str] | None = None) -> dict:
    """Run a measurement in a fresh interpreter and return the JSON object it prints last.

    A fresh process per measured path: the CBLAS preload cannot be undone, and peak memory
    must be per path. `without_blas` is for the plain-MLX path and for torch, which a
    preloaded BLAS slows several times over (its threads fight torch's OpenMP pool).
    """
    settings = {**os.environ, **(env or {})}  # `env`: variables set for this run only
    if without_blas:
        settings["LOCOMLX_BLAS"] = "none"
    done = subprocess.run(args, capture_output=True, text=True, env=settings)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {' '.join(args[1:3])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_worker(kind: str, settings: BenchSettings) -> dict:
    return run_isolated([sys.executable, "-m", "locomlx.bench", kind, json.dumps(settings.__dict__)],
                        without_blas=kind in ("plain", "transformers", "llamacpp"))


def transformers_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def llamacpp_available(base_model: str | None) -> bool:
    """llama-cpp-python is installed and the base model comes from a GGUF file it can read."""
    import importlib.util

    from locomlx.models.resolve import gguf_source

    return importlib.util.find_spec("llama_cpp") is not None and gguf_source(base_model) is not None


def run_bench(settings: BenchSettings, progress=lambda msg: None) -> dict:
    results: dict = {
        "settings": settings.__dict__,
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
    }
    progress("adapters: resident switch, load from disk, naive reload ...")
    results["adapters"] = _run_worker("adapters", settings)
    paths = (["default", "plain"] + (["transformers"] if transformers_available() else [])
             + (["llamacpp"] if llamacpp_available(settings.base_model) else []))
    runs: dict[str, list[dict]] = {path: [] for path in paths}
    for round_, path in alternating_rounds(paths, settings.rounds):
        if path == "plain" and runs[path]:  # tens of times slower than the others: the first round only
            continue
        progress(f"round {round_}/{settings.rounds}: inference: {PATHS[path]['label']} ...")
        runs[path].append(_run_worker(path, settings))
    results["inference"] = {path: merged_rounds(done) for path, done in runs.items()}
    progress("memory bandwidth: a STREAM-like copy ...")
    results["bandwidth"] = memory_bandwidth()
    return results


def alternating_rounds(names: list[str], rounds: int):
    """(round, name) for every name in each of `rounds` rounds (numbered from 1), each round in the reverse order
    of the one before: a machine that drifts (a neighbour's load, heat) then weighs on every name alike."""
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            yield round_ + 1, name


def merged_rounds(runs: list[dict]) -> dict:
    """One path's figures over its rounds: the median speeds, the highest peak memory, each round's speeds."""
    return {**runs[0],
            "prefill_tps": statistics.median(r["prefill_tps"] for r in runs),
            "decode_tps": statistics.median(r["decode_tps"] for r in runs),
            "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
            "rounds": [{"prefill_tps": r["prefill_tps"], "decode_tps": r["decode_tps"]} for r in runs]}


def format_report(results: dict) -> str:
    a = results["adapters"]
    s = results["settings"]
    lines = [
        f"locomlx bench · {results['machine']['platform']} · {results['machine']['cpus']} CPUs",
        "",
        f"Adapters (rank {a['rank']} on {a['layers']} linear layers; medians)",
        f"  resident switch          {a['resident_switch_seconds'] * 1e6:10.2f} µs",
        f"  load from disk           {a['load_from_disk_seconds'] * 1e3:10.2f} ms",
        f"  naive: reload base+adapter {a['naive_reload_seconds'] * 1e3:8.0f} ms   "
        f"({a['naive_reload_seconds'] / a['resident_switch_seconds']:,.0f}x the resident switch, "
        f"{a['naive_reload_seconds'] / a['load_from_disk_seconds']:,.0f}x the disk load)",
        f"  naive, mlx-lm 4-bit load {a['naive_mlx_lm_4bit_reload_seconds'] * 1e3:10.0f} ms   "
        f"({a['naive_mlx_lm_4bit_reload_seconds'] / a['resident_switch_seconds']:,.0f}x the resident switch)",
        "",
        f"Inference ({s['prompt_tokens']}-token prefill, {s['decode_tokens']}-token decode; medians of {s['repeats']} "
        f"repeats in each of {s.get('rounds', 1)} rounds, in alternating order, one process per path and round)",
        f"  {'path':48s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'peak MB':>9s}",
    ]
    inference = results["inference"]
    for key, r in inference.items():
        lines.append(f"  {_label(key, r):48s} {r['prefill_tps']:14.1f} {r['decode_tps']:13.1f} "
                     f"{r['peak_memory_mb']:9.0f}")
    d = inference["default"]
    for key in [k for k in inference if k != "default"]:
        r = inference[key]
        lines.append(f"  default / {key:37s} {d['prefill_tps'] / r['prefill_tps']:13.2f}x "
                     f"{d['decode_tps'] / r['decode_tps']:12.2f}x "
                     f"{d['peak_memory_mb'] / r['peak_memory_mb']:8.2f}x")
    if "transformers" not in inference:
        lines.append("  (transformers: install the optional extra `pip install -e .[torch]` to compare)")
    if "llamacpp" not in inference:
        lines.append("  (llama.cpp: install the optional extra `pip install -e .[llama]`, and use a GGUF base model)")
    bandwidth = results["bandwidth"]["bytes_per_second"]
    lines += ["", f"Physical limit: decode reads every weight once per token; memory bandwidth "
                  f"{bandwidth / 1e9:.1f} GB/s (STREAM-like copy, {results['bandwidth']['threads']} threads)",
              f"  {'path':48s} {'MB per token':>14s} {'limit tok/s':>13s} {'decode/limit':>13s}"]
    for key, r in inference.items():
        limit = bandwidth / r["weight_bytes"]
        lines.append(f"  {_label(key, r):48s} {r['weight_bytes'] / 1e6:14.1f} {limit:13.1f} "
                     f"{r['decode_tps'] / limit:12.0%}")
    return "\n".join(lines)


def _label(key: str, result: dict) -> str:
    # Where the qgemv kernel is built, locomlx's default decodes on the packed 4-bit weights.
    return "locomlx default (CBLAS prefill, 4-bit decode)" if result.get("packed_decode") else PATHS[key]["label"]


def _worker_main(kind: str, settings_json: str) -> None:
    settings = BenchSettings(**json.loads(settings_json))
    if kind == "adapters":
        result = _adapter_times(settings)
    elif kind == "transformers":
        result = _transformers_worker(settings)
    elif kind == "llamacpp":
        result = _llamacpp_worker(settings)
    else:
        result = _mlx_worker(settings, PATHS[kind]["compute_dtype"])
    print(json.dumps(result))


if __name__ == "__main__":
    from locomlx.heap import keep_freed_memory

    keep_freed_memory()  # a worker owns its process, as `locomlx` does
    _worker_main(sys.argv[1], sys.argv[2])
