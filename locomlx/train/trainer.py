"""`locomlx train`: checked data in, a complete standard adapter directory out.

The run lives in `<output>.partial/` (with its checkpoint) and is renamed to
`<output>` only when everything is written, so a half-written adapter never
appears under the real name. `resume=True` continues `<output>.partial/` with
the configuration stored there.

Under `mlx.launch` every rank loads the base and the data and takes its share of each batch (train/loop.py);
rank 0 alone writes: the partial folder, its checkpoints and the finished adapter.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from locomlx._version import __version__
from locomlx.adapters.library import library_dir
from locomlx.data.checks import check_file, library_benchmarks
from locomlx.data.records import Example
from locomlx.distributed import World, broadcast_object
from locomlx.engine.engine import peak_memory_mb
from locomlx.errors import LocomlxError
from locomlx.models.load import load_base
from locomlx.models.resolve import resolve_model
from locomlx.prompt import length_counter, render_example
from locomlx.provenance import file_sha256, hardware, versions
from locomlx.train.config import TrainConfig, load_config
from locomlx.train.loop import Encoded, LoopState, add_lora_layers, run_loop, saved_checkpoint
from locomlx.train.report import DataStats, loss_svg, training_log

import mlx.core as mx
import numpy as np
import yaml
from mlx.utils import tree_flatten


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


def _facts(config: TrainConfig, base, name: str, world: World) -> dict:
    return {
        "world_size": world.size,
        "name": name,
        "base_model": base.resolved.reference,
        "base_source": base.resolved.source,
        "base_hash": base.resolved.source_hash or "n/a",
        "compute_dtype": base.compute_dtype,
        "dataset_sha256": file_sha256(config.dataset),
        "versions": versions(),
        "hardware": hardware(),
    }


def _write_adapter(directory: Path, model, config: TrainConfig, n_layers: int, base_model: str) -> None:
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
        "base_model": base_model,  # as resolved: --base-model, else $LOCOMLX_BASE_MODEL, else the default
        "locomlx_version": __version__,
    }
    (directory / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))


def _replay(config: TrainConfig, base, own: list[Example], benchmarks: list[Path],
            on_message: Callable[[str], None]) -> list[Example]:
    """Other tasks' questions with the base model's answers (see locomlx/train/replay.py); [] without --replay."""
    if not config.replay:
        return []
    from locomlx.engine.engine import Engine
    from locomlx.train.replay import answered_only, base_answers, replay_questions

    questions = replay_questions(config.replay, config.replay_per_file, own, benchmarks)
    on_message(f"Replay: {len(questions)} questions from {len(config.replay)} file(s), answered by the base model "
               f"(at most {config.replay_max_tokens} tokens; cached answers are reused).")
    progress = lambda done, total: on_message(f"  replay answers {done}/{total}")  # noqa: E731
    answered = answered_only(base_answers(Engine(base), questions, config.replay_max_tokens, progress))
    if len(answered) < len(questions):
        on_message(f"Replay: {len(questions) - len(answered)} of them left out, the base model gave no answer "
                   "(see locomlx/train/replay.py).")
    return answered


def partial_dir(output: str | Path) -> Path:
    """Where a run lives until it is complete."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def resumable(output: str | Path) -> bool:
    """Whether an interrupted run of `output` left a checkpoint to resume from (one stopped before its first
    save leaves only its recorded config)."""
    return saved_checkpoint(partial_dir(output) / "checkpoint") is not None


def resume_config(output: str | Path) -> TrainConfig:
    """The exact configuration an interrupted run of `output` started with."""
    stored = partial_dir(output) / "training" / "train_config.yaml"
    if not stored.is_file():
        raise LocomlxError(f"Nothing to resume: {stored} does not exist. Start without --resume.")
    return load_config(None, yaml.safe_load(stored.read_text())["config"])


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapters.safetensors")


def _prepare_output(config: TrainConfig, resume: bool) -> TrainConfig:
    """Refuse an output that would be overwritten, and take the benchmark from it when it has one.

    An adapter folder that holds only its inputs (the contributing guide's layout: training/dataset.jsonl,
    training/TRAINING_LOG.md, training/generate.py, eval/benchmark.jsonl) is trained in place; a folder
    that already holds a trained adapter is never overwritten."""
    output = Path(config.output)
    partial = partial_dir(output)
    trained = [name for name in ADAPTER_FILES if (output / name).exists() or (output / name).is_symlink()]
    if output.exists() and (not output.is_dir() or trained):
        what = f"already holds a trained adapter ({', '.join(trained)})" if trained else "exists and is not a folder"
        raise LocomlxError(f"{output} {what}; choose another --output, or delete it first. To improve an adapter, "
                           f"train the new version into a folder of its own (e.g. {output.name}-v2) and register it "
                           f"with the same name and a higher --version (CONTRIBUTING.md, 'Improving an adapter').")
    if not resume and partial.exists():
        if resumable(output):
            raise LocomlxError(f"An interrupted run exists in {partial}; "
                               "continue it with --resume, or delete it to start over.")
        shutil.rmtree(partial)  # stopped before its first checkpoint: nothing in it to continue or to lose
    in_place = output / "eval" / "benchmark.jsonl"
    if config.benchmark is None and in_place.is_file():
        config = dataclasses.replace(config, benchmark=str(in_place))
    return config


def _check_same_dataset(stored: Path, dataset: str, sha256: str) -> None:
    """A resumed run must train on the file the run started on: its batches are positions in that file."""
    started = yaml.safe_load(stored.read_text()).get("dataset_sha256") if stored.is_file() else None
    if started and started != sha256:
        raise LocomlxError(f"{dataset} changed since this run started (sha256 {started[:12]}... then, {sha256[:12]}... "
                           "now); --resume continues only on the same data. Restore the file, or delete "
                           f"{stored.parent.parent} and train from the start.")


def _move_into(partial: Path, output: Path) -> None:
    """Make the finished run `output`: a rename when `output` does not exist, else (training in place) every
    file moved in, the adapter's config last, so the folder holds a usable adapter only once all is there."""
    if not output.exists():
        partial.rename(output)
        return
    files = sorted(p for p in partial.rglob("*") if p.is_file() or p.is_symlink())
    last = partial / "adapter_config.json"
    for path in [p for p in files if p != last] + [last]:
        target = output / path.relative_to(partial)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(partial)


def train(config: TrainConfig, resume: bool = False, on_progress: Callable | None = None,
          on_message: Callable[[str], None] = lambda msg: None, world: World = World(None)) -> TrainResult:
    """Train and write the adapter (rank 0); the other ranks of a distributed run train and return."""
    started = time.perf_counter()
    if world.is_leader:
        config = _prepare_output(config, resume)
    config = dataclasses.replace(config, benchmark=broadcast_object(world, config.benchmark))
    output = Path(config.output)
    partial = partial_dir(output)

    base = load_base(resolve_model(config.base_model), config.compute_dtype)
    benchmarks = _benchmarks(config)
    examples = _check_data(config, base.tokenizer, benchmarks)
    replayed = _replay(config, base, examples, benchmarks, on_message)
    examples = examples + replayed
    train_examples, val_examples = split_examples(examples, config.val_fraction, config.seed)
    train_data, truncated, dropped = encode_examples(base.tokenizer, train_examples, config.max_seq_length,
                                                     config.long_examples)
    val_data, _, _ = encode_examples(base.tokenizer, val_examples, config.max_seq_length, config.long_examples)
    if not train_data:
        raise LocomlxError(f"Every training example is longer than --max-seq-length {config.max_seq_length} tokens "
                           "and was dropped; raise --max-seq-length (or use long_examples: truncate).")
    lengths = [len(t) for t, _ in train_data]
    stats = DataStats(len(train_data), len(val_data), truncated, dropped, float(np.mean(lengths)), max(lengths),
                      float(np.mean([len(t) - o for t, o in train_data])), len(replayed))
    if truncated or dropped:
        on_message(_length_message(base.tokenizer, train_examples, replayed, config))

    add_lora_layers(base.model, config)
    if not world.is_leader:
        state = run_loop(base.model, train_data, val_data, config, partial / "checkpoint", resume, None, world)
        return TrainResult(output, state, stats)
    facts = _facts(config, base, output.name, world)
    if resume:
        _check_same_dataset(partial / "training" / "train_config.yaml", config.dataset, facts["dataset_sha256"])
    (partial / "training").mkdir(parents=True, exist_ok=True)
    record = {"config": config.to_dict(), **{k: facts[k] for k in ("base_model", "base_source", "base_hash",
                                                                   "compute_dtype", "dataset_sha256", "versions")}}
    (partial / "training" / "train_config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))

    state = run_loop(base.model, train_data, val_data, config, partial / "checkpoint", resume, on_progress, world)

    _write_adapter(partial, base.model, config, len(base.model.layers), base.resolved.reference)
    dataset = partial / "training" / "dataset.jsonl"
    if not _same_file(config.dataset, output / "training" / "dataset.jsonl"):
        shutil.copyfile(config.dataset, dataset)
    if replayed:
        (partial / "training" / "replay.jsonl").write_text("".join(
            json.dumps({"instruction": e.instruction, "input": e.input, "output": e.output}, ensure_ascii=False) + "\n"
            for e in replayed), encoding="utf-8")
    if config.benchmark and not _same_file(config.benchmark, output / "eval" / "benchmark.jsonl"):
        (partial / "eval").mkdir(exist_ok=True)
        shutil.copyfile(config.benchmark, partial / "eval" / "benchmark.jsonl")
    facts.update(finished=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 wall_seconds=time.perf_counter() - started, peak_memory_mb=peak_memory_mb(),
                 software=", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    (partial / "training" / "loss.svg").write_text(loss_svg(state))
    student_log = output / "training" / "TRAINING_LOG.md"
    existing = student_log.read_text(encoding="utf-8") if student_log.is_file() else None
    (partial / "training" / "TRAINING_LOG.md").write_text(training_log(config, state, stats, facts, existing))
    shutil.rmtree(partial / "checkpoint", ignore_errors=True)
    _move_into(partial, output)
    return TrainResult(output, state, stats)


def _same_file(a: str | Path, b: Path) -> bool:
    return b.exists() and Path(a).resolve() == b.resolve()


def _length_message(tokenizer, train_examples: list[Example], replayed: list[Example], config: TrainConfig) -> str:
    """How many examples --max-seq-length truncated and dropped, and how many of them were replayed rows."""
    replay_ids = {id(e) for e in replayed}
    counts = {"truncated": [0, 0], "dropped": [0, 0]}
    for ex in train_examples:
        tokens, offset = render_example(tokenizer, ex.instruction, ex.input, ex.output)
        if len(tokens) > config.max_seq_length:
            kind = "dropped" if config.long_examples == "drop" or offset >= config.max_seq_length - 1 else "truncated"
            counts[kind][id(ex) in replay_ids] += 1
    parts = []
    for kind, (own, replay) in counts.items():
        of_which = f" ({own} of your data, {replay} replayed)" if replayed else ""
        parts.append(f"{own + replay} {kind}{of_which}")
    return (f"Training examples longer than --max-seq-length {config.max_seq_length} tokens: {' and '.join(parts)}. "
            "Raise --max-seq-length to keep them whole.")
