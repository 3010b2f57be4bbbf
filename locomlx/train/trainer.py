"""`locomlx train`: checked data in, a complete standard adapter directory out.

The run lives in `<output>.partial/` (with its checkpoint) and is renamed to
`<output>` only when everything is written, so a half-written adapter never
appears under the real name. `resume=True` continues `<output>.partial/` with
the configuration stored there.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np
import yaml
from mlx.utils import tree_flatten

from locomlx._version import __version__
from locomlx.adapters.library import library_dir
from locomlx.data.checks import check_file, library_benchmarks
from locomlx.data.records import Example
from locomlx.engine.engine import peak_memory_mb
from locomlx.errors import LocomlxError
from locomlx.models.load import load_base
from locomlx.models.resolve import resolve_model
from locomlx.prompt import length_counter, render_example
from locomlx.provenance import file_sha256, hardware, versions
from locomlx.train.config import TrainConfig, load_config
from locomlx.train.loop import Encoded, LoopState, add_lora_layers, run_loop
from locomlx.train.report import DataStats, loss_svg, training_log


@dataclass
class TrainResult:
    output: Path
    state: LoopState
    stats: DataStats


def encode_examples(tokenizer, examples: list[Example], max_seq_length: int, policy: str) -> tuple[Encoded, int, int]:
    """Tokenize with the one prompt format; returns (data, truncated count, dropped count)."""
    data, truncated, dropped = [], 0, 0
    for ex in examples:
        tokens, offset = render_example(tokenizer, ex.instruction, ex.input, ex.output)
        if len(tokens) > max_seq_length:
            if policy == "drop" or offset >= max_seq_length - 1:
                dropped += 1
                continue
            tokens = tokens[:max_seq_length]
            truncated += 1
        data.append((tokens, offset))
    return data, truncated, dropped


def split_examples(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = int(round(val_fraction * len(examples)))
    val = [examples[i] for i in sorted(order[:n_val])]
    train = [examples[i] for i in sorted(order[n_val:])]
    return train, val


def _benchmarks(config: TrainConfig) -> list[Path]:
    """The benchmarks training data must not leak into: the adapter's own and the library's."""
    benchmarks = library_benchmarks(library_dir(config.adapters_dir))
    if config.benchmark:
        benchmarks = [Path(config.benchmark)] + [b for b in benchmarks
                                                 if b.resolve() != Path(config.benchmark).resolve()]
    return benchmarks


def _check_data(config: TrainConfig, tokenizer, benchmarks: list[Path]) -> list[Example]:
    if config.benchmark:
        bench = check_file(config.benchmark, "benchmark", config.allow_small)
        if bench.errors:
            raise LocomlxError("The benchmark has problems:\n" + "\n".join(map(str, bench.errors)))
    report = check_file(config.dataset, "train", config.allow_small, benchmarks, length_counter(tokenizer),
                        config.max_seq_length,
                        config.long_examples)
    if report.errors:
        shown = report.errors[:30]
        more = f"\n... and {len(report.errors) - 30} more" if len(report.errors) > 30 else ""
        raise LocomlxError("The training data has problems (run `locomlx data check` for the full report):\n"
                           + "\n".join(map(str, shown)) + more)
    return report.examples


def _facts(config: TrainConfig, base, name: str) -> dict:
    return {
        "name": name,
        "base_model": base.resolved.reference,
        "base_source": base.resolved.source,
        "base_hash": base.resolved.source_hash or "n/a",
        "compute_dtype": base.compute_dtype,
        "dataset_sha256": file_sha256(config.dataset),
        "versions": versions(),
        "hardware": hardware(),
    }


def _write_adapter(directory: Path, model, config: TrainConfig, n_layers: int) -> None:
    dtype = getattr(mx, config.save_dtype)
    weights = {k: v.astype(dtype) for k, v in tree_flatten(model.trainable_parameters())}
    mx.save_safetensors(str(directory / "adapter_model.safetensors"), weights, metadata={"format": "mlx"})
    # mlx-lm looks for adapters.safetensors: a relative link keeps one copy of the weights.
    link = directory / "adapters.safetensors"
    link.unlink(missing_ok=True)
    link.symlink_to("adapter_model.safetensors")
    adapter_config = {
        "fine_tune_type": "lora",
        "num_layers": config.lora_layer_count(n_layers),
        "lora_parameters": {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": config.lora_dropout,
                            "keys": config.target_modules},
        "base_model": config.base_model or "smollm2-135m",
        "locomlx_version": __version__,
    }
    (directory / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))


def _replay(config: TrainConfig, base, own: list[Example], benchmarks: list[Path],
            on_message: Callable[[str], None]) -> list[Example]:
    """Other tasks' questions with the base model's answers (see locomlx/train/replay.py); [] without --replay."""
    if not config.replay:
        return []
    from locomlx.engine.engine import Engine
    from locomlx.train.replay import base_answers, replay_questions

    questions = replay_questions(config.replay, config.replay_per_file, own, benchmarks)
    on_message(f"Replay: {len(questions)} questions from {len(config.replay)} file(s), answered by the base model "
               f"(at most {config.replay_max_tokens} tokens; cached answers are reused).")
    progress = lambda done, total: on_message(f"  replay answers {done}/{total}")  # noqa: E731
    return base_answers(Engine(base), questions, config.replay_max_tokens, progress)


def partial_dir(output: str | Path) -> Path:
    """Where a run lives until it is complete."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def resume_config(output: str | Path) -> TrainConfig:
    """The exact configuration an interrupted run of `output` started with."""
    stored = partial_dir(output) / "training" / "train_config.yaml"
    if not stored.is_file():
        raise LocomlxError(f"Nothing to resume: {stored} does not exist. Start without --resume.")
    return load_config(None, yaml.safe_load(stored.read_text())["config"])


def train(config: TrainConfig, resume: bool = False, on_progress: Callable | None = None,
          on_message: Callable[[str], None] = lambda msg: None) -> TrainResult:
    started = time.perf_counter()
    output = Path(config.output)
    partial = partial_dir(output)
    if output.exists():
        raise LocomlxError(f"{output} already exists; choose another --output or delete it first.")
    if not resume and partial.exists():
        raise LocomlxError(f"An interrupted run exists in {partial}; "
                           "continue it with --resume, or delete it to start over.")

    base = load_base(resolve_model(config.base_model), config.compute_dtype)
    benchmarks = _benchmarks(config)
    examples = _check_data(config, base.tokenizer, benchmarks)
    replayed = _replay(config, base, examples, benchmarks, on_message)
    examples = examples + replayed
    train_examples, val_examples = split_examples(examples, config.val_fraction, config.seed)
    train_data, truncated, dropped = encode_examples(base.tokenizer, train_examples, config.max_seq_length,
                                                     config.long_examples)
    val_data, _, _ = encode_examples(base.tokenizer, val_examples, config.max_seq_length, config.long_examples)
    lengths = [len(t) for t, _ in train_data]
    stats = DataStats(len(train_data), len(val_data), truncated, dropped, float(np.mean(lengths)), max(lengths),
                      float(np.mean([len(t) - o for t, o in train_data])), len(replayed))
    if truncated or dropped:
        on_message(f"{truncated} examples truncated and {dropped} dropped at --max-seq-length {config.max_seq_length}.")

    add_lora_layers(base.model, config)
    facts = _facts(config, base, output.name)
    (partial / "training").mkdir(parents=True, exist_ok=True)
    record = {"config": config.to_dict(), **{k: facts[k] for k in ("base_model", "base_source", "base_hash",
                                                                   "compute_dtype", "dataset_sha256", "versions")}}
    (partial / "training" / "train_config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))

    state = run_loop(base.model, train_data, val_data, config, partial / "checkpoint", resume, on_progress)

    _write_adapter(partial, base.model, config, len(base.model.layers))
    shutil.copyfile(config.dataset, partial / "training" / "dataset.jsonl")
    if replayed:
        (partial / "training" / "replay.jsonl").write_text("".join(
            json.dumps({"instruction": e.instruction, "input": e.input, "output": e.output}, ensure_ascii=False) + "\n"
            for e in replayed), encoding="utf-8")
    if config.benchmark:
        (partial / "eval").mkdir(exist_ok=True)
        shutil.copyfile(config.benchmark, partial / "eval" / "benchmark.jsonl")
    facts.update(finished=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 wall_seconds=time.perf_counter() - started, peak_memory_mb=peak_memory_mb(),
                 software=", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    (partial / "training" / "loss.svg").write_text(loss_svg(state))
    (partial / "training" / "TRAINING_LOG.md").write_text(training_log(config, state, stats, facts))
    shutil.rmtree(partial / "checkpoint", ignore_errors=True)
    partial.rename(output)
    return TrainResult(output, state, stats)
