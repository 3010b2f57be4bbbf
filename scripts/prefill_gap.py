#!/usr/bin/env python3
"""Where a prompt's prefill spends its time against transformers on this CPU: its matrix products, alone and in
the model.

`locomlx bench` times a 512-token prefill of the embedded model against transformers on the same float32 weights.
This splits that forward three ways, in each engine:
- the whole forward (every position's logits, as the bench);
- its 210 block matrix products alone: every linear layer's weight applied to inputs of the prompt's shape in a
  loop, nothing else between them; and the tied head's product alone;
- (locomlx) the 30 blocks with those products replaced by constants that still depend on their input, so that
  everything but the products runs as in the model; (torch) its profiler's time outside `aten::mm`;
- and the parts added up, and what the whole forward spends beyond them: the parts slowing each other.
locomlx also runs with MKL on Intel's OpenMP (MKL_THREADING_LAYER=INTEL: the products on a team of threads
other than the kernels', the two spinning on each other's cores) and with the CPU kernels on one thread
(LOCOMLX_KERNEL_THREADS=1). Every variant runs in its own process once per round, the rounds in alternating
order; medians over rounds. Writes docs/prefill-gap.md.

    python scripts/prefill_gap.py                  # 3 rounds (about 4 minutes on 2 cores)
    python scripts/prefill_gap.py --rounds 1 --out /tmp/gap.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import locomlx  # first: preloads the CBLAS (off, by LOCOMLX_BLAS=none, in the torch worker)

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 512
REPEATS = 5
VARIANTS = {"locomlx": {}, "locomlx, MKL_THREADING_LAYER=INTEL": {"MKL_THREADING_LAYER": "INTEL"},
            "locomlx, LOCOMLX_KERNEL_THREADS=1": {"LOCOMLX_KERNEL_THREADS": "1"}, "transformers": {}}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _median_ms(run) -> float:
    run()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _prompt(vocab: int) -> list[int]:
    return [(i * 7919 + 13) % (vocab - 100) + 50 for i in range(TOKENS)]


def mlx_worker() -> dict:
    from locomlx.models.load import compute_stream, load_base
    from locomlx.models.resolve import resolve_model

    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.cache import make_prompt_cache

    model = load_base(resolve_model(None), "float32").model
    tokens = mx.array([_prompt(model.args.vocab_size)])
    hidden = model.args.hidden_size
    blocks = model.model.layers
    weights = [getattr(b.self_attn if n.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else b.mlp, n).weight
               for b in blocks for n in LINEARS]
    inputs = {k: mx.random.normal((1, TOKENS, k)) for k in {w.shape[1] for w in weights}}
    mx.eval(inputs)

    class Constant(nn.Module):
        """A linear layer's output of the right shape, computed from nothing but a zero multiple of its input."""

        def __init__(self, width: int):
            super().__init__()
            self.value = mx.random.normal((1, TOKENS, width)) * 0.02

        def __call__(self, x):
            return self.value + x[..., :1] * 0.0

    with mx.stream(compute_stream()):
        result = {
            "whole forward": _median_ms(lambda: mx.eval(model(tokens, cache=make_prompt_cache(model)))),
            "block products alone": _median_ms(lambda: mx.eval([inputs[w.shape[1]] @ w.T for w in weights])),
            "head product alone": _median_ms(lambda: mx.eval(model.model.embed_tokens.as_linear(inputs[hidden]))),
        }
        for block in blocks:
            for n in LINEARS:
                parent = block.self_attn if n in ("q_proj", "k_proj", "v_proj", "o_proj") else block.mlp
                setattr(parent, n, Constant(getattr(parent, n).weight.shape[0]))
        mx.eval(model.parameters())
        result["blocks without their products"] = _median_ms(
            lambda: mx.eval(model.model(tokens, cache=make_prompt_cache(model))))
    return result


def torch_worker() -> dict:
    from locomlx.bench import transformers_twin

    import torch
    from torch.profiler import ProfilerActivity, profile

    model, config, _ = transformers_twin(None)
    model.eval()
    tokens = torch.tensor([_prompt(config["vocab_size"])])
    weights = [getattr(b.self_attn if n in ("q_proj", "k_proj", "v_proj", "o_proj") else b.mlp, n).weight
               for b in model.model.layers for n in LINEARS]
    inputs = {k: torch.randn(1, TOKENS, k) for k in {w.shape[1] for w in weights}}
    with torch.inference_mode():
        result = {
            "whole forward": _median_ms(lambda: model(tokens, use_cache=True)),
            "block products alone": _median_ms(lambda: [torch.nn.functional.linear(inputs[w.shape[1]], w)
                                                        for w in weights]),
            "head product alone": _median_ms(lambda: model.lm_head(inputs[config['hidden_size']])),
        }
        with profile(activities=[ProfilerActivity.CPU]) as trace:
            model(tokens, use_cache=True)
    events = trace.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1000
    products = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm") / 1000
    result["outside aten::mm (profiled)"] = total - products
    return result


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "prefill-gap.md"))
    parser.add_argument("--worker", choices=["mlx", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(mlx_worker() if args.worker == "mlx" else torch_worker()))
        return
    from locomlx.bench import alternating_rounds, run_isolated, transformers_available

    names = [n for n in VARIANTS if n != "transformers" or transformers_available()]
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for round_, name in alternating_rounds(names, args.rounds):
        print(f"round {round_}/{args.rounds}: {name} ...", file=sys.stderr)
        runs[name].append(run_isolated([sys.executable, __file__, "--worker",
                                        "torch" if name == "transformers" else "mlx"],
                                       without_blas=name == "transformers", env=VARIANTS[name]))
    medians = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    for figures in medians.values():
        rest = figures.get("blocks without their products", figures.get("outside aten::mm (profiled)"))
        figures["parts added up"] = figures["block products alone"] + figures["head product alone"] + rest
        figures["whole less its parts"] = figures["whole forward"] - figures["parts added up"]
    rows = ["whole forward", "block products alone", "head product alone", "blocks without their products",
            "outside aten::mm (profiled)", "parts added up", "whole less its parts"]
    lines = ["# Where a prefill spends its time, against transformers", "",
             f"Written by `python scripts/prefill_gap.py{'' if args.rounds == 3 else f' --rounds {args.rounds}'}` "
             f"on the embedded SmolLM2-135M: a {TOKENS}-token prompt on the same float32 weights, milliseconds, "
             f"medians of {REPEATS} repeats in each process and of {args.rounds} rounds (every variant in its own "
             "process once per round, rounds in alternating order). What each row times: the script's docstring.",
             "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in rows:
        cells = [f"{medians[n][row]:.0f}" if row in medians[n] else "" for n in names]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
