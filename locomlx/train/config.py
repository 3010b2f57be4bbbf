"""The training configuration: defaults of the contributing guide, a YAML file, then command-line flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from locomlx.errors import LocomlxError

import yaml

SAVE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class TrainConfig:
    dataset: str = ""
    output: str = ""
    base_model: str | None = None
    benchmark: str | None = None  # copied to eval/benchmark.jsonl and checked for leakage
    lora_rank: int = 16
    lora_alpha: float | None = None  # scale = alpha / rank; default alpha = 2 * rank
    lora_dropout: float = 0.0
    # LoRA targets inside each block; empty = every linear layer of the model's blocks (models/anatomy.py)
    target_modules: list[str] = field(default_factory=list)
    num_layers: int = -1  # LoRA on the last N transformer blocks; -1 = all
    epochs: float = 3.0
    lr: float = 2e-4
    batch_size: int = 4
    grad_accumulation: int = 1
    grad_checkpoint: bool = False
    max_seq_length: int = 1024
    long_examples: str = "truncate"  # truncate | drop
    val_fraction: float = 0.1
    seed: int = 0
    steps_per_eval: int = 50
    steps_per_save: int = 25
    val_batches: int = 8
    compute_dtype: str = "auto"
    save_dtype: str = "float32"  # dtype of the saved LoRA weights: float16 halves the file, the engine upcasts
    allow_small: bool = False
    adapters_dir: str | None = None  # library whose benchmarks are checked for leakage
    replay: list[str] = field(default_factory=list)  # other tasks' JSONL: their questions, the base's answers
    replay_per_file: int = 50  # questions drawn from each replay file
    replay_max_tokens: int = 64  # length of the base model's replayed answers

    @property
    def lora_scale(self) -> float:
        alpha = self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank
        return alpha / self.lora_rank

    def lora_layer_count(self, n_layers: int) -> int:
        """How many of the model's last blocks get LoRA layers (`num_layers` -1, 0 or too large = all)."""
        return n_layers if self.num_layers in (-1, 0) or self.num_layers > n_layers else self.num_layers

    def validate(self) -> None:
        if not self.dataset:
            raise LocomlxError("No training data: pass --dataset FILE.jsonl (or set dataset: in --config).")
        if not self.output:
            raise LocomlxError("No output directory: pass --output DIR (or set output: in --config).")
        checks = [
            (self.lora_rank >= 1, "--lora-rank must be at least 1"),
            (self.epochs > 0, "--epochs must be positive"),
            (self.lr > 0, "--lr must be positive"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accumulation >= 1, "--grad-accumulation must be at least 1"),
            (self.max_seq_length >= 8, "--max-seq-length must be at least 8"),
            (0 <= self.val_fraction < 0.5, "--val-fraction must be in [0, 0.5)"),
            (self.long_examples in ("truncate", "drop"), "long_examples must be 'truncate' or 'drop'"),
            (self.save_dtype in SAVE_DTYPES, f"save_dtype must be one of {', '.join(SAVE_DTYPES)}"),
            (self.replay_per_file >= 1, "--replay-per-file must be at least 1"),
            (self.replay_max_tokens >= 1, "--replay-max-tokens must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise LocomlxError(message)
        for file in self.replay:
            if not Path(file).is_file():
                raise LocomlxError(f"Replay file {file} does not exist; --replay takes another task's JSONL data.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None, overrides: dict) -> TrainConfig:
    """Defaults <- YAML file <- overrides (flags the user actually gave, None meaning 'not given')."""
    values: dict = {}
    if path:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise LocomlxError(f"Cannot read training config {path}: {exc}") from exc
        if not isinstance(values, dict):
            raise LocomlxError(f"{path}: expected a mapping of option: value at the top level.")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LocomlxError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("replay"), str):
        values["replay"] = [values["replay"]]
    if isinstance(values.get("target_modules"), str):
        values["target_modules"] = [m.strip() for m in values["target_modules"].split(",") if m.strip()]
    try:
        config = TrainConfig(**values)
    except TypeError as exc:
        raise LocomlxError(f"Bad training configuration: {exc}") from exc
    config.validate()
    return config


def recorded_recipe(folder: Path) -> dict:
    """The training settings an adapter folder records (training/train_config.yaml's `config`): what retraining
    it, on another base or on other data, starts from."""
    path = folder / "training" / "train_config.yaml"
    if not path.is_file():
        raise LocomlxError(f"{folder} has no training/train_config.yaml, so its recipe is unknown and it cannot be "
                           "retrained; train it with `locomlx train`, which records one.")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))["config"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise LocomlxError(f"{path}: cannot read its 'config' section ({exc}); it is not a train_config.yaml "
                           "written by `locomlx train`.") from exc
