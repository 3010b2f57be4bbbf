"""Adapters the studies train: a library adapter's recorded recipe with one thing changed (the data, the seed,
the rank), trained the way `locomlx train` trains, with the adapter's replay questions in the same share of the
mix. A finished adapter is found, not retrained, so a study resumes where it stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

from locomlx.atomic import write_text_atomic
from locomlx.data.records import read_examples
from locomlx.train.config import load_config, recorded_recipe
from locomlx.train.replay import replay_file_from
from locomlx.train.trainer import resumable, train


def own_examples(folder: Path) -> int:
    """How many training examples the library adapter was trained on."""
    return len(read_examples(folder / "training" / "dataset.jsonl")[0])


def train_variant(library: Path, folder: Path, out: Path, reference: str | None, rows: list[dict] | None = None,
                  **changes) -> dict:
    """Train (or find) `out`: `folder`'s recipe on `rows` (default its own data) with `changes` applied; returns
    the training facts (seconds, steps, replayed examples). Replay keeps the recipe's share: R questions
    beside N examples become R * n / N beside n, at least one."""
    if not (out / "adapter_config.json").is_file():
        recipe = recorded_recipe(folder)
        data = folder / "training" / "dataset.jsonl"
        n = own_examples(folder)
        if rows is not None:
            data, n = out.parent / "data" / f"{out.name}.jsonl", len(rows)
            write_text_atomic(data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        replay, replay_rows = replay_file_from(folder, out.parent / "data" / f"{folder.name}-replay.jsonl")
        overrides = {**recipe, "dataset": str(data), "output": str(out), "base_model": reference,
                     "benchmark": str(folder / "eval" / "benchmark.jsonl"), "adapters_dir": str(library),
                     "replay": [str(replay)] if replay_rows else [], "allow_small": True,
                     "replay_per_file": max(1, round(replay_rows * n / own_examples(folder))), **changes}
        started = time.perf_counter()
        result = train(load_config(None, overrides), resume=resumable(out))
        facts = {"train_seconds": time.perf_counter() - started, "steps": result.state.step,
                 "replayed": result.stats.replayed, **changes}
        write_text_atomic(out / "study.json", json.dumps(facts))
    return json.loads((out / "study.json").read_text())
