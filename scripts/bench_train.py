#!/usr/bin/env python3
"""Training throughput of `locomlx train` against mlx-lm's own trainer and PEFT, in one run.

All three train the same rank-8 LoRA (every linear layer of every block) on the
same float32 weights of the embedded model, on the same batches, for the same
number of steps; each runs in its own process, every trainer once per round, and
the rounds alternate their order; medians are reported with their range (single
runs drift by 15% on a shared machine). Tokens/s counts prompt + answer tokens
(padding excluded) over the steps after a warm-up.

    python scripts/bench_train.py                 # locomlx vs mlx-lm (vs PEFT if torch + peft are installed)
    python scripts/bench_train.py --steps 40 --rounds 5 --json

PEFT needs the optional extras: pip install -e ".[torch]" peft
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import sys
import time

import locomlx  # first: preloads the CBLAS (off, by LOCOMLX_BLAS=none, in a torch worker)
from locomlx.models.anatomy import block_linears

WARMUP = 3
RANK = 8


def examples(n: int = 256, seed: int = 0) -> list[dict]:
    """Synthetic instruction data of varied length (speed does not depend on content)."""
    rng = random.Random(seed)
    words = "the model reads a short text and answers the question about it with care and a clear reason".split()
    rows = []
    for _ in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 90)))
        rows.append({"instruction": "Summarize the text in a few words.", "input": text,
                     "output": " ".join(rng.choice(words) for _ in range(rng.randint(3, 15)))})
    return rows


def encoded_data():
    from locomlx.models.load import load_tokenizer_only
    from locomlx.prompt import render_example

    tokenizer = load_tokenizer_only(None)
    return [render_example(tokenizer, r["instruction"], r["input"], r["output"]) for r in examples()]


def encoded_batches(settings: dict):
    """The exact batches locomlx's loop sees (its batch plan is a pure function of seed and step)."""
    from locomlx.train.loop import BatchPlan

    data = encoded_data()
    plan = BatchPlan(data, settings["batch_size"], seed=0)
    return [[data[i] for i in plan.indices(step)] for step in range(settings["steps"])]


def _timed(step_fn, batches) -> dict:
    tokens, seconds = 0, 0.0
    for i, batch in enumerate(batches):
        tic = time.perf_counter()
        step_fn(batch)
        if i >= WARMUP:
            seconds += time.perf_counter() - tic
            tokens += sum(len(t) for t, _ in batch)
    return {"tokens_per_second": tokens / seconds, "timed_steps": len(batches) - WARMUP}


def run_locomlx(settings: dict) -> dict:
    import tempfile
    from pathlib import Path

    from locomlx.models.load import load_base
    from locomlx.models.resolve import resolve_model
    from locomlx.train.config import TrainConfig
    from locomlx.train.loop import BatchPlan, add_lora_layers, run_loop

    data = encoded_data()
    steps_per_epoch = BatchPlan(data, settings["batch_size"], seed=0).steps_per_epoch
    base = load_base(resolve_model(None), "float32")
    config = TrainConfig(dataset="-", output="-", lora_rank=RANK, lora_alpha=2 * RANK,
                         batch_size=settings["batch_size"], lr=1e-4, seed=0, steps_per_eval=10**9,
                         steps_per_save=10**9, epochs=(settings["steps"] - 0.5) / steps_per_epoch)
    add_lora_layers(base.model, config)
    marks = []
    with tempfile.TemporaryDirectory() as tmp:
        run_loop(base.model, data, [], config, Path(tmp) / "checkpoint", False,
                 lambda state, point: marks.append((state.train_seconds, state.trained_tokens)))
    (s0, k0), (s1, k1) = marks[WARMUP - 1], marks[-1]
    return {"tokens_per_second": (k1 - k0) / (s1 - s0), "timed_steps": len(marks) - WARMUP}


def run_mlx_lm(settings: dict) -> dict:
    from locomlx.models.load import load_base
    from locomlx.models.resolve import resolve_model
    from locomlx.train.loop import collate

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.trainer import default_loss
    from mlx_lm.tuner.utils import linear_to_lora_layers

    batches = encoded_batches(settings)
    model = load_base(resolve_model(None), "float32").model
    model.freeze()
    linear_to_lora_layers(model, len(model.layers), {"rank": RANK, "scale": 2.0, "dropout": 0.0,
                                                     "keys": block_linears(model)})
    optimizer = optim.Adam(learning_rate=1e-4)
    loss_and_grad = nn.value_and_grad(model, default_loss)
    model.train()

    # mlx-lm's trainer step as `mlx_lm lora` runs it (compiled, state in and out).
    state = [model.state, optimizer.state, mx.random.state]

    @__import__("functools").partial(mx.compile, inputs=state, outputs=state)
    def step(batch, lengths):
        (loss, ntoks), grad = loss_and_grad(model, batch, lengths)
        optimizer.update(model, grad)
        return loss, ntoks

    def one(batch):
        loss, _ = step(*collate(batch))
        mx.eval(state, loss)

    return _timed(one, batches)


def run_peft(settings: dict) -> dict:
    from locomlx.bench import transformers_twin
    from locomlx.train.loop import PAD_MULTIPLE

    import torch
    from peft import LoraConfig, get_peft_model

    batches = encoded_batches(settings)
    model, _, _ = transformers_twin(None)
    twin_targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                           if type(module).__name__ == "Linear" and ".layers." in name})
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0,
                                             target_modules=twin_targets))
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def one(batch):
        longest = max(len(t) for t, _ in batch)
        width = PAD_MULTIPLE * -(-longest // PAD_MULTIPLE)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (tokens, offset) in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            labels[row, offset: len(tokens)] = torch.tensor(tokens[offset:])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return _timed(one, batches)


RUNNERS = {"locomlx": run_locomlx, "mlx_lm": run_mlx_lm, "peft": run_peft}


def main() -> None:
    locomlx.keep_freed_memory()  # this script owns its process, as `locomlx` does (locomlx/heap.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3,
                        help="Runs of every trainer, in alternating order; the median is reported [3].")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {"steps": args.steps, "batch_size": args.batch_size}
    if args.worker:
        print(json.dumps(RUNNERS[args.worker](settings)))
        return
    from locomlx.bench import alternating_rounds, run_isolated

    names = ["locomlx", "mlx_lm"]
    if all(importlib.util.find_spec(m) for m in ("torch", "peft", "transformers")):
        names.append("peft")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_, name in alternating_rounds(names, args.rounds):
        print(f"round {round_}/{args.rounds}: training with {name} ...", file=sys.stderr)
        runs[name].append(run_isolated([sys.executable, __file__, "--worker", name, "--steps", str(args.steps),
                                        "--batch-size", str(args.batch_size)], without_blas=name == "peft"))
    results = {name: {"tokens_per_second": statistics.median(r["tokens_per_second"] for r in rs),
                      "rounds": [r["tokens_per_second"] for r in rs], "timed_steps": rs[0]["timed_steps"]}
               for name, rs in runs.items()}
    if args.json:
        print(json.dumps({"settings": settings, "results": results}, indent=2))
        return
    ours = results["locomlx"]["tokens_per_second"]
    print(f"LoRA training, rank {RANK} on all linear layers, batch {args.batch_size}, {args.steps} steps "
          f"({WARMUP} warm-up), SmolLM2-135M float32; medians of {args.rounds} rounds (each in its own process)")
    for name, r in results.items():
        ratio = "" if name == "locomlx" else f"   locomlx / {name} = {ours / r['tokens_per_second']:.2f}x"
        spread = f"({min(r['rounds']):.0f}-{max(r['rounds']):.0f})" if args.rounds > 1 else ""
        print(f"  {name:8s} {r['tokens_per_second']:8.0f} tokens/s {spread:11s}{ratio}".rstrip())


if __name__ == "__main__":
    main()
