"""The resumable LoRA training loop, built from mlx-lm's tuner pieces (LoRA layers, loss).

Batch order is a pure function of (seed, step): examples are sorted by length
and cut into batches once (little padding), and each epoch shuffles the batch
order with its own seeded generator. A resumed run therefore sees exactly the
batches an uninterrupted run would; the RNG is re-seeded from the step, and
with the optimizer state restored from the checkpoint it reaches the same weights.

Under `mlx.launch` (data parallel), every rank takes every world-size-th row of
the same global batch, and each rank's loss is its share of the global answer
tokens, so the summed gradients are the gradient of the global batch's mean loss:
the run follows the single-process one up to floating-point summation order.
Rank 0 alone writes checkpoints and, on resume, hands its weights and optimizer
state to the others.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from locomlx.distributed import SAVING, World, all_sum, all_sum_tree, broadcast_arrays, broadcast_object
from locomlx.errors import LocomlxError, LostRank
from locomlx.models.anatomy import ForwardSplit, block_linears, forward_split
from locomlx.models.cpu_kernels import cross_entropy, unfused_attention
from locomlx.train.config import TrainConfig

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

PAD_MULTIPLE = 32


class TrainingInterrupted(LocomlxError):
    """Ctrl-C during training; the last completed step is checkpointed."""


@dataclass
class LossPoint:
    step: int
    epoch: float
    train_loss: float | None = None
    val_loss: float | None = None
    tokens_per_second: float | None = None


@dataclass
class LoopState:
    step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 1
    trained_tokens: int = 0
    train_seconds: float = 0.0
    history: list[LossPoint] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "LoopState":
        data = json.loads(text)
        data["history"] = [LossPoint(**p) for p in data["history"]]
        return cls(**data)


Encoded = list[tuple[list[int], int]]  # (tokens, index where the answer starts)


class BatchPlan:
    """Deterministic batches: batch `step` is the same whenever it is asked for."""

    def __init__(self, data: Encoded, batch_size: int, seed: int):
        if len(data) < batch_size:
            raise LocomlxError(f"Only {len(data)} training examples, fewer than --batch-size {batch_size}.")
        order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
        self.data = data
        self.batches = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
        self.seed = seed

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def indices(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        permutation = np.random.default_rng([self.seed, epoch]).permutation(self.steps_per_epoch)
        return self.batches[permutation[position]]

    def batch(self, step: int, world: World = World(None)) -> tuple[mx.array, mx.array]:
        """Batch `step`, or this rank's rows of it (every world-size-th one)."""
        return collate([self.data[i] for i in self.indices(step)[world.rank::world.size]])


def collate(items: Encoded) -> tuple[mx.array, mx.array]:
    """Pad to a multiple of 32 (+1 for the shifted targets); lengths hold (answer start, length) per row."""
    longest = max(len(tokens) for tokens, _ in items)
    width = 1 + PAD_MULTIPLE * math.ceil(longest / PAD_MULTIPLE)
    batch = np.zeros((len(items), width), np.int32)
    for row, (tokens, _) in enumerate(items):
        batch[row, : len(tokens)] = tokens
    lengths = [(offset, len(tokens)) for tokens, offset in items]
    return mx.array(batch), mx.array(lengths)


def answer_windows(lengths: mx.array) -> tuple[mx.array, mx.array]:
    """Per row, the input positions whose next token is an answer token, padded to a common width.

    Position j predicts token j + 1, so the answer tokens offset..length-1 are predicted from
    positions offset-1..length-2. Returns (positions, mask), both (rows, width).
    """
    spans = np.array(lengths).astype(np.int64)
    counts = np.maximum(spans[:, 1] - spans[:, 0], 1)
    width = 8 * math.ceil(counts.max() / 8)  # few distinct shapes, so few recompilations
    steps = np.arange(width)[None, :]
    positions = np.minimum(spans[:, :1] - 1 + steps, spans[:, 1:] - 2).clip(min=0)
    mask = steps < (spans[:, 1:] - spans[:, :1])
    return mx.array(positions.astype(np.int32)), mx.array(mask)


def answer_loss(model, batch, positions, mask, split: ForwardSplit | None):
    """Mean cross-entropy over the answer tokens only.

    With a `split` (models/anatomy.py) logits are computed only at the answer positions: with short answers
    after long prompts (classification, QA) this skips most of the vocabulary projection and its softmax,
    the costliest part of a step for a 49k-token vocabulary on a CPU. Without one (a model whose head does
    more than a projection) the model's own forward pass gives every position's logits.
    """
    targets = mx.take_along_axis(batch[:, 1:], positions, axis=1)
    if split is None:
        logits = mx.take_along_axis(model(batch[:, :-1]), positions[..., None], axis=1)
    else:
        hidden = split.trunk(batch[:, :-1])
        logits = split.head(mx.take_along_axis(hidden, positions[..., None], axis=1))
    losses = cross_entropy(logits, targets) * mask
    ntoks = mask.sum()
    return losses.astype(mx.float32).sum() / ntoks, ntoks


def validation_loss(model, data: Encoded, batch_size: int, max_batches: int,
                    split: ForwardSplit | None) -> float | None:
    if not data:
        return None
    total, count = 0.0, 0
    for start in range(0, min(len(data), batch_size * max_batches), batch_size):
        batch, lengths = collate(data[start:start + batch_size])
        loss, tokens = answer_loss(model, batch, *answer_windows(lengths), split)
        total += loss.item() * tokens.item()
        count += tokens.item()
    return total / count if count else None


# --- checkpoints ----------------------------------------------------------------------------

def save_checkpoint(directory: Path, model: nn.Module, optimizer: optim.Optimizer, state: LoopState) -> None:
    """Write the checkpoint beside the old one, then swap: at every moment one complete checkpoint exists."""
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / "adapter.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    (tmp / "state.json").write_text(state.to_json())
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def saved_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint under `directory`: itself, or the previous one that a save interrupted between
    its two renames left aside; None when the run stopped before its first save."""
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint(directory: Path, model: nn.Module, optimizer: optim.Optimizer) -> LoopState:
    saved = saved_checkpoint(directory)
    if saved is None:
        raise LocomlxError(f"No checkpoint to resume from in {directory}; start without --resume.")
    model.load_weights(list(mx.load(str(saved / "adapter.safetensors")).items()), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(saved / "optimizer.safetensors")).items()))
    return LoopState.from_json((saved / "state.json").read_text())


# --- the loop -------------------------------------------------------------------------------

class DeferredInterrupt:
    """Ctrl-C during training asks for a stop at the end of the step instead of raising inside it: raised
    between the optimizer's update and the step counter's, a checkpoint would hold weights one step ahead of
    its count, and a resumed run would apply that batch twice. A second Ctrl-C raises at once (the last saved
    checkpoint is kept). Only the main thread receives signals; elsewhere this does nothing."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def add_lora_layers(model: nn.Module, config: TrainConfig) -> None:
    """Freeze the base and put trainable LoRA layers on the target modules (mlx-lm's tuner)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    mx.random.seed(config.seed)  # the LoRA initialisation is part of what --seed reproduces
    n_layers = len(model.layers)
    available = block_linears(model)
    if not config.target_modules:
        config.target_modules = available  # recorded in train_config.yaml as the list actually trained
    missing = [m for m in config.target_modules if m not in available]
    if missing:
        raise LocomlxError(f"--target-modules {', '.join(missing)} are not linear layers of the model's blocks; "
                           f"its linear layers: {', '.join(available)}.")
    linear_to_lora_layers(model, config.lora_layer_count(n_layers),
                          {"rank": config.lora_rank, "scale": config.lora_scale,
                           "dropout": config.lora_dropout, "keys": config.target_modules})


def _share_of_global_loss(model, batch, positions, mask, share, *, split):
    """This rank's mean answer loss times its share of the global batch's answer tokens: summed over the ranks,
    the global batch's mean loss (share is 1 in a single process, which leaves the loss bit-for-bit as it is)."""
    loss, tokens = answer_loss(model, batch, positions, mask, split)
    return loss * share, tokens


def _start_state(model: nn.Module, optimizer: optim.Optimizer, state: LoopState, world: World) -> LoopState:
    """Every rank starts from rank 0's weights, optimizer state and step (a resumed run's checkpoint is only
    on rank 0's host)."""
    if world.size == 1:
        return state
    model.update(tree_unflatten(list(broadcast_arrays(world, dict(tree_flatten(model.trainable_parameters())))
                                     .items())))
    moments = broadcast_arrays(world, dict(tree_flatten(optimizer.state)))
    if moments:
        optimizer.state = tree_unflatten(list(moments.items()))
    return LoopState.from_json(broadcast_object(world, state.to_json()))


def run_loop(model: nn.Module, train_data: Encoded, val_data: Encoded, config: TrainConfig, checkpoint_dir: Path,
             resume: bool, on_progress: Callable[[LoopState, LossPoint | None], None] | None = None,
             world: World = World(None)) -> LoopState:
    from mlx_lm.tuner.trainer import grad_checkpoint

    if config.batch_size < world.size:
        raise LocomlxError(f"--batch-size {config.batch_size} is the global batch, split among {world.size} ranks; "
                           f"give at least {world.size} so that every rank has a row.")
    plan = BatchPlan(train_data, config.batch_size, config.seed)
    optimizer = optim.Adam(learning_rate=config.lr)
    state = LoopState(total_steps=max(1, math.ceil(config.epochs * plan.steps_per_epoch)),
                      steps_per_epoch=plan.steps_per_epoch)
    if resume and world.is_leader:
        state = load_checkpoint(checkpoint_dir, model, optimizer)
    state = _start_state(model, optimizer, state, world)
    if config.grad_checkpoint:
        grad_checkpoint(model.layers[0])

    split = forward_split(model)
    loss_and_grad = nn.value_and_grad(model, partial(_share_of_global_loss, split=split))
    compiled_state = [model.state, optimizer.state, mx.random.state]
    accumulate = config.grad_accumulation

    @partial(mx.compile, inputs=compiled_state, outputs=compiled_state)
    def train_step(batch, positions, mask, share, previous_grad, do_update):
        with unfused_attention():
            (loss, tokens), grad = loss_and_grad(model, batch, positions, mask, share)
        grad = all_sum_tree(world, grad)
        loss = all_sum(world, loss)
        if previous_grad is not None:
            grad = tree_map(lambda a, b: a + b, grad, previous_grad)
        if do_update:
            if accumulate > 1:
                grad = tree_map(lambda g: g / accumulate, grad)
            optimizer.update(model, grad)
            grad = None
        return loss, tokens, grad

    model.train()
    grad = None
    window_loss, window_tokens, window_seconds, window_steps = 0.0, 0, 0.0, 0
    consistent = True  # weights, optimizer and `state` describe the same step (False while a step runs)
    try:
        with DeferredInterrupt() as interrupt:
            while state.step < state.total_steps:
                consistent = False
                tic = time.perf_counter()
                batch, lengths = plan.batch(state.step, world)
                # Randomness (dropout) is a function of the step, so a resumed run needs no saved RNG state.
                mx.random.seed(config.seed * 1_000_003 + state.step)
                do_update = (state.step + 1) % accumulate == 0 or state.step + 1 == state.total_steps
                positions, mask = answer_windows(lengths)
                # answer tokens (for the loss) and prompt + answer tokens (throughput; padding excluded)
                mine = mx.array([int(mask.sum().item()), int(lengths[:, 1].sum().item())])
                answer_tokens, processed = (int(n) for n in all_sum(world, mine).tolist())
                share = mx.array(int(mine[0].item()) / answer_tokens if world.size > 1 else 1.0)
                loss, _, grad = train_step(batch, positions, mask, share, grad, do_update)
                mx.eval(compiled_state, loss, grad)
                seconds = time.perf_counter() - tic
                state.step += 1
                state.trained_tokens += processed
                state.train_seconds += seconds
                consistent = True
                window_loss += loss.item()
                window_tokens += processed
                window_seconds += seconds
                window_steps += 1

                point = None
                last = state.step == state.total_steps
                if state.step % config.steps_per_eval == 0 or last or state.step == 1:
                    model.eval()
                    val = validation_loss(model, val_data, config.batch_size, config.val_batches, split)
                    model.train()
                    point = LossPoint(state.step, state.step / plan.steps_per_epoch, window_loss / window_steps,
                                      val, window_tokens / window_seconds if window_seconds else None)
                    state.history.append(point)
                    window_loss, window_tokens, window_seconds, window_steps = 0.0, 0, 0.0, 0
                if state.step % config.steps_per_save == 0 and not last and grad is None and world.is_leader:
                    with SAVING:
                        save_checkpoint(checkpoint_dir, model, optimizer, state)
                if on_progress:
                    on_progress(state, point)
                if interrupt.requested and grad is None and not last:
                    raise KeyboardInterrupt
    except (KeyboardInterrupt, LostRank, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and world.size == 1:
            raise
        # Checkpoint only between steps and at an optimizer-update boundary (mid-accumulation gradients are not
        # saved); Ctrl-C itself only asks for a stop at the next such boundary (DeferredInterrupt). A step that
        # completed was complete on every rank (its gradients were summed over all), so a lost rank keeps it.
        if consistent and grad is None and state.step > 0 and world.is_leader:
            with SAVING:  # mlx.launch's stop waits for it (distributed.stop_on_sigterm)
                save_checkpoint(checkpoint_dir, model, optimizer, state)
            where = f"step {state.step}"
        else:
            where = "the last saved step"
        if isinstance(exc, KeyboardInterrupt):
            raise TrainingInterrupted(f"Training interrupted; checkpoint kept at {where}. "
                                      "Run the same command with --resume to continue.") from None
        raise LostRank(f"{world.label}: the distributed run lost a rank ({exc}); checkpoint kept at {where} on "
                       "rank 0's host. Run the same command with --resume (with or without mlx.launch) to "
                       "continue.") from None
    model.eval()
    return state
