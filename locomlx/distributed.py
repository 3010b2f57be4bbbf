"""The ranks of a run started by `mlx.launch` (mlx.distributed), and the few collectives locomlx needs.

A command run without `mlx.launch` is a world of one: every function here then returns at once and moves
nothing, so the single-machine path is the distributed path with one rank. Python values travel as bytes in
uint8 arrays over `all_gather` (the ring, MPI, JACCL and NCCL backends all implement it); a peer that stops
turns the collective's error into a `LostRank` naming what to do, and `mlx.launch` then stops the other
ranks with SIGTERM, which `stop_on_sigterm` turns into a clean error too.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import dataclass

from locomlx.errors import LocomlxError, LostRank

import mlx.core as mx
import numpy as np

RERUN_HINT = ("Work that finished is cached on the host that did it; run the same command again (with or "
              "without mlx.launch) and only what is missing is redone.")


@dataclass(frozen=True)
class World:
    group: object | None  # mx.distributed.Group, or None for a single process
    rank: int = 0
    size: int = 1

    @property
    def is_leader(self) -> bool:
        """Rank 0: the one rank that writes results, registries and adapters."""
        return self.rank == 0

    @property
    def label(self) -> str:
        return f"rank {self.rank}/{self.size}" if self.size > 1 else ""


def current_world() -> World:
    """The world this process belongs to: the one `mlx.launch` set up (MLX_RANK, MLX_HOSTFILE...), else one rank."""
    if not mx.distributed.is_available():
        return World(None)
    group = mx.distributed.init()
    if group.size() == 1:
        return World(None)
    return World(group, group.rank(), group.size())


def gather_bytes(world: World, data: bytes) -> list[bytes]:
    """Every rank's `data`, in rank order, on every rank."""
    if world.size == 1:
        return [data]
    try:
        sizes = mx.distributed.all_gather(mx.array([len(data)], dtype=mx.int64), group=world.group)
        sizes = [int(n) for n in np.array(sizes)]
        padded = np.zeros(max(sizes), np.uint8)
        padded[:len(data)] = np.frombuffer(data, np.uint8)
        gathered = np.array(mx.distributed.all_gather(mx.array(padded), group=world.group))
    except RuntimeError as exc:
        raise LostRank(f"{world.label}: a peer left the distributed run ({exc}). {RERUN_HINT}") from None
    width = max(sizes)
    return [gathered[i * width:i * width + n].tobytes() for i, n in enumerate(sizes)]


def gather_objects(world: World, value) -> list:
    """Every rank's `value` (JSON data: lists, dicts, strings, numbers), in rank order, on every rank."""
    return [json.loads(b) for b in gather_bytes(world, json.dumps(value).encode())]


def broadcast_object(world: World, value):
    """Rank 0's `value` on every rank (what other ranks pass is ignored)."""
    if world.size == 1:
        return value
    return gather_objects(world, value if world.is_leader else None)[0]


def check_same(world: World, what: str, value) -> None:
    """Refuse to go on when the ranks disagree on `value` (their library, data or options differ)."""
    values = gather_objects(world, value)
    differing = [rank for rank, v in enumerate(values) if v != values[0]]
    if differing:
        raise LocomlxError(f"{what} differs between rank 0 and rank(s) {', '.join(map(str, differing))}: every "
                           "host needs the same checkout, adapter library, data files and command-line options "
                           "at the same paths (docs/distributed.md).")


def broadcast_arrays(world: World, arrays: dict[str, mx.array]) -> dict[str, mx.array]:
    """Rank 0's named arrays on every rank (weights, optimizer state), whatever the others hold: the names,
    shapes and dtypes travel first, then each array as a sum in which only rank 0's copy is not zero."""
    if world.size == 1:
        return arrays
    layout = broadcast_object(world, [[name, list(a.shape), str(a.dtype).split(".")[-1]]
                                      for name, a in arrays.items()] if world.is_leader else None)
    out = {}
    for name, shape, dtype in layout:
        mine = arrays[name] if world.is_leader else mx.zeros(shape, getattr(mx, dtype))
        out[name] = mx.distributed.all_sum(mine, group=world.group)
    mx.eval(list(out.values()))
    return out


def all_sum(world: World, value: mx.array) -> mx.array:
    """The sum of `value` over the ranks; `value` itself with one rank."""
    return value if world.size == 1 else mx.distributed.all_sum(value, group=world.group)


def all_sum_tree(world: World, tree):
    """The sum over ranks of every array in `tree` (gradients), as one collective over their concatenation: one
    round trip per step instead of one per array; the tree itself with one rank."""
    if world.size == 1:
        return tree
    from mlx.utils import tree_flatten, tree_unflatten

    flat = tree_flatten(tree)
    summed = mx.distributed.all_sum(mx.concatenate([a.reshape(-1) for _, a in flat]), group=world.group)
    cuts = np.cumsum([a.size for _, a in flat])[:-1].tolist()
    return tree_unflatten([(name, part.reshape(a.shape).astype(a.dtype))
                           for (name, a), part in zip(flat, mx.split(summed, cuts))])


SAVING = threading.Lock()  # held while a rank writes what a rerun resumes from (a checkpoint): SIGTERM waits


def stop_on_sigterm(world: World, hint: str = RERUN_HINT) -> None:
    """When `mlx.launch` stops this rank because another one ended, print why and exit 1, instead of dying
    silently or hanging. The main thread may be blocked inside a collective the lost peer never completes,
    where no Python signal handler would run, so Python's own signal catcher only writes the signal to a
    pipe (`signal.set_wakeup_fd`, whichever thread the signal lands on) and a thread of ours reads it. An
    ongoing save (`SAVING`) is let finish first."""
    if world.size == 1:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the thread below does the work
    signal.set_wakeup_fd(write_end)

    def wait():
        while signal.SIGTERM not in os.read(read_end, 64):
            pass
        SAVING.acquire(timeout=60)
        sys.stderr.write(f"error: {world.label}: stopped by mlx.launch because another rank of the run ended (it "
                         f"failed or its host was lost; its own output says why). {hint}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)

    threading.Thread(target=wait, name="locomlx-sigterm", daemon=True).start()
