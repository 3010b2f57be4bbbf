#!/usr/bin/env python3
"""Where a prefill, a decode step (one row and a batch) and a training step spend their time on this CPU, op by op.

Every module of the embedded model on the default path (float32 + preloaded CBLAS) is wrapped in a
timer that evaluates its inputs first and its output last, so each op's time is its own (exclusive
of the ops inside it; "attention core" is rope, the attention product and the reshapes; "mlp
activation" the SiLU gate product). Forcing evaluation op by op serializes what MLX would fuse or
overlap, so the profiled total runs above the unprofiled one; both are printed, and the shares are
what point at the next gap. The training step is `locomlx train`'s own: its loss over answer windows
(logits only there), unfused attention, rank-8 LoRA on every linear layer. MLX's autodiff builds one
graph for a whole step, which a timer cannot split, so each op's backward is timed on its own too: the
vector-Jacobian product of that op alone (for its inputs and its own LoRA weights), less its forward.
The whole step is also timed three ways: forward, forward + backward, forward + backward + Adam update.

Writes docs/cpu-profile.md.

    python scripts/profile_cpu.py                     # 512-token prefill, 32 decode steps, 4 x 256 training batch
    python scripts/profile_cpu.py --quick --out /tmp/p.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import locomlx  # first: preloads the CBLAS

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

ROOT = Path(__file__).resolve().parents[1]


class Timed(nn.Module):
    """A module that times its inner module's call, exclusive of timed modules inside it."""

    def __init__(self, inner: nn.Module, label: str, ledger: "Ledger"):
        super().__init__()
        self.inner = inner
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "ledger", ledger)

    def __call__(self, *args, **kwargs):
        return self.ledger.time(self.label, self.inner, *args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = dict.get(self, "inner")  # absent while nn.Module.__init__ runs
            if inner is None:
                raise
            value = getattr(inner, name)
            if name == "as_linear":  # a tied lm head: the embedding matrix used as the output layer
                return lambda *args: self.ledger.time("lm head", value, *args)
            return value


class Ledger:
    """Exclusive time per op label. With `backward` on, each op is also run as a vector-Jacobian product of
    its own (inclusive of the ops inside it, which subtract theirs), and `backward_seconds` holds that time
    less the op's forward time."""

    def __init__(self):
        self.on = False
        self.backward = False
        self.reset()

    def reset(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.backward_seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list[float]] = []

    def time(self, label: str, function, *args, **kwargs):
        if not self.on:
            return function(*args, **kwargs)
        mx.eval([a for a in args if isinstance(a, mx.array)])
        forward = with_vjp = 0.0
        if self.backward:
            self.on = False  # the ops inside are timed by the call below, not these
            shown = function(*args, **kwargs)  # unevaluated: only its shape is read
            cotangent = mx.random.normal(shown.shape).astype(shown.dtype)
            mx.eval(cotangent)
            forward = _seconds(lambda: function(*args, **kwargs))
            with_vjp = _seconds(lambda: _own_vjp(function, args, kwargs, cotangent))
            self.on = True
        self.stack.append([0.0, 0.0])
        start = time.perf_counter()
        out = function(*args, **kwargs)
        mx.eval(out)
        elapsed = time.perf_counter() - start
        child_forward, child_vjp = self.stack.pop()
        if self.backward:
            elapsed = forward
            self.backward_seconds[label] += (with_vjp - child_vjp) - (forward - child_forward)
        self.seconds[label] += elapsed - child_forward
        self.calls[label] += 1
        if self.stack:
            self.stack[-1][0] += elapsed
            self.stack[-1][1] += with_vjp
        return out


def _seconds(run) -> float:
    start = time.perf_counter()
    mx.eval(run())
    return time.perf_counter() - start


def _own_vjp(function, args: tuple, kwargs: dict, cotangent: mx.array):
    """The gradients a training step takes through `function`: for its floating-point array inputs and, for
    a module, its trainable weights (the LoRA matrices), from `cotangent`; with the op's output, since MLX
    computes only what is asked for, and a training step asks for both (the backward reusing the forward's
    intermediates), so evaluating the two costs the op's forward and backward as a step pays them."""
    slots = [i for i, a in enumerate(args) if isinstance(a, mx.array) and mx.issubdtype(a.dtype, mx.floating)]
    trainable = tree_flatten(function.trainable_parameters()) if isinstance(function, nn.Module) else []
    names = [name for name, _ in trainable]

    def own(*primals):
        if names:
            function.update(tree_unflatten(list(zip(names, primals[len(slots):]))))
        inputs = list(args)
        for i, value in zip(slots, primals):
            inputs[i] = value
        return function(*inputs, **kwargs)

    primals = [args[i] for i in slots] + [value for _, value in trainable]
    outputs, grads = mx.vjp(own, primals, [cotangent])
    if names:
        function.update(tree_unflatten(trainable))
    return outputs, grads


@contextmanager
def timed_cross_entropy(ledger: Ledger):
    """Within the block, the loss's cross-entropy (the one `answer_loss` calls) is one timed op."""
    from locomlx.train import loop

    original = loop.cross_entropy
    loop.cross_entropy = lambda *args, **kwargs: ledger.time("cross-entropy loss", original, *args, **kwargs)
    try:
        yield
    finally:
        loop.cross_entropy = original


def instrument(model: nn.Module, ledger: Ledger) -> None:
    """Wrap the embedding, every block's norms, attention, MLP and their linear layers in timers."""
    inner = model.model
    inner.embed_tokens = Timed(inner.embed_tokens, "embedding", ledger)
    for block in inner.layers:
        block.input_layernorm = Timed(block.input_layernorm, "rms norm", ledger)
        block.post_attention_layernorm = Timed(block.post_attention_layernorm, "rms norm", ledger)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(block.self_attn, name, Timed(getattr(block.self_attn, name), name, ledger))
        for name in ("gate_proj", "up_proj", "down_proj"):
            setattr(block.mlp, name, Timed(getattr(block.mlp, name), name, ledger))
        block.self_attn = Timed(block.self_attn, "attention core", ledger)
        block.mlp = Timed(block.mlp, "mlp activation", ledger)
    inner.norm = Timed(inner.norm, "rms norm", ledger)


def profiled(ledger: Ledger, run, repeats: int, per: int = 1) -> tuple[dict, float, float]:
    """({op: (forward seconds, backward seconds or None, calls)} per run, profiled seconds per run, unprofiled
    seconds per run); a run that holds `per` units (decode steps) is reported per unit. With the ledger's
    backward on, the profiled run also computes every op's own vector-Jacobian product, so its total is not
    the step's: "rest" then is what the unprofiled forward spends outside the timed ops."""
    run()  # warm-up
    plain = statistics.median(_timed(run) for _ in range(repeats))
    ledger.reset()
    ledger.on = True
    total = sum(_timed(run) for _ in range(repeats)) / repeats
    ledger.on = False
    per_op = {k: (v / repeats / per, ledger.backward_seconds[k] / repeats / per if ledger.backward else None,
                  ledger.calls[k] / repeats / per) for k, v in ledger.seconds.items()}
    if ledger.backward:
        total = plain
    per_op["residual adds, rest"] = (total / per - sum(f for f, _, _ in per_op.values()), None, None)
    return per_op, total / per, plain / per


def _timed(run) -> float:
    start = time.perf_counter()
    mx.eval(run())
    return time.perf_counter() - start


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--batch-rows", type=int, default=16, help="Rows of the batched decode step.")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: a smoke run.")
    parser.add_argument("--out", default=str(ROOT / "docs" / "cpu-profile.md"))
    args = parser.parse_args()
    if args.quick:
        args.prompt_tokens, args.decode_steps, args.train_batch, args.train_tokens, args.repeats = 32, 4, 2, 32, 1
        args.batch_rows = 4

    from locomlx import blas
    from locomlx.models.anatomy import forward_split
    from locomlx.models.cpu_kernels import unfused_attention
    from locomlx.models.load import compute_stream, load_base
    from locomlx.models.resolve import resolve_model
    from locomlx.train.config import TrainConfig
    from locomlx.train.loop import add_lora_layers, answer_loss, answer_windows, collate

    import mlx.optimizers as optim
    from mlx_lm.models.cache import make_prompt_cache

    base = load_base(resolve_model(None), "float32")
    model = base.model
    vocab = base.config["vocab_size"]
    prompt = mx.array([[(i * 7919 + 13) % (vocab - 100) + 50 for i in range(args.prompt_tokens)]])
    ledger = Ledger()
    sections = {}
    with mx.stream(compute_stream()):
        instrument(model, ledger)

        def prefill():
            return model(prompt, cache=make_prompt_cache(model))

        sections["prefill"] = profiled(ledger, prefill, args.repeats) + (f"{args.prompt_tokens}-token prompt",)

        def decoding(rows: int, prompt_length: int):
            """Decode steps of `rows` rows, one token each, after a prompt of `prompt_length` tokens."""
            cache = make_prompt_cache(model)
            mx.eval(model(mx.repeat(prompt[:, :prompt_length], rows, axis=0), cache=cache))
            token = mx.full((rows, 1), 42, mx.int32)

            def steps():
                for c in cache:  # every run decodes the same positions
                    c.offset = prompt_length
                out = None
                for _ in range(args.decode_steps):
                    out = model(token, cache=cache)
                    mx.eval(out)
                return out

            return steps

        sections["decode step"] = profiled(ledger, decoding(1, 16), args.repeats, args.decode_steps) + (
            f"one token after a 16-token prompt, mean of {args.decode_steps} uncompiled steps",)
        context = min(48, args.prompt_tokens)
        sections["batched decode step"] = profiled(ledger, decoding(args.batch_rows, context), args.repeats,
                                                   args.decode_steps) + (
            f"{args.batch_rows} rows, one token each after {context}-token prompts, mean of {args.decode_steps} "
            "uncompiled steps: the model's part of a step of `locomlx eval`'s batches",)

        model = load_base(resolve_model(None), "float32").model  # the training copy, with LoRA layers
        add_lora_layers(model, TrainConfig(dataset="-", output="-", lora_rank=8, lora_alpha=16))
        instrument(model, ledger)
        split = forward_split(model)  # after instrumenting: its head is the timed lm head
        model.train()
        # Rows of a classification set: a long prompt, then a short answer (the last eighth of each row).
        answer = max(1, args.train_tokens // 8)
        batch, lengths = collate([([(i * 31 + r * 7 + 5) % (vocab - 100) + 50 for i in range(args.train_tokens)],
                                   args.train_tokens - answer) for r in range(args.train_batch)])
        positions, mask = answer_windows(lengths)

        def loss_fn(m):
            with unfused_attention(), timed_cross_entropy(ledger):
                return answer_loss(m, batch, positions, mask, split)[0]

        def forward():
            return loss_fn(model)

        ledger.backward = True
        sections["training step"] = profiled(ledger, forward, args.repeats) + (
            f"{args.train_batch} x {args.train_tokens} tokens, answers the last {answer} of each row, `locomlx "
            "train`'s loss, rank-8 LoRA on every linear layer",)
        ledger.backward = False
        grad = nn.value_and_grad(model, loss_fn)
        optimizer = optim.Adam(learning_rate=1e-5)

        def backward():
            loss, grads = grad(model)
            return loss, grads

        def update():
            loss, grads = grad(model)
            optimizer.update(model, grads)
            return loss, model.trainable_parameters(), optimizer.state

        whole = {"forward": statistics.median(_timed(forward) for _ in range(args.repeats))}
        backward()
        whole["forward + backward"] = statistics.median(_timed(backward) for _ in range(args.repeats))
        update()
        whole["forward + backward + Adam"] = statistics.median(_timed(update) for _ in range(args.repeats))
    lines = ["# Where the CPU time goes: prefill, decode step, training step", "",
             f"Written by `python scripts/profile_cpu.py{' --quick' if args.quick else ''}` on the embedded "
             f"SmolLM2-135M, default path (float32, BLAS {Path(blas.preload().path or 'bundled').name}). Each op "
             "is timed on its own (inputs evaluated first, output last), which serializes what MLX would "
             "overlap: the profiled total runs above the unprofiled one, and the shares are what to read.", ""]
    for name, (per_op, total, plain, what) in sections.items():
        lines += [f"## {name} ({what})", ""]
        ranked = sorted(per_op.items(), key=lambda kv: -(kv[1][0] + (kv[1][1] or 0.0)))
        if name != "training step":
            lines += [f"Unprofiled {plain * 1000:.1f} ms · profiled {total * 1000:.1f} ms", "",
                      "| op | ms | share | calls |", "|---|---:|---:|---:|"]
            lines += [f"| {op} | {f * 1000:.2f} | {f / total:.1%} | {'' if n is None else f'{n:g}'} |"
                      for op, (f, _, n) in ranked]
            lines.append("")
            continue
        backward = whole["forward + backward"] - whole["forward"]
        per_op["residual adds, rest"] = (per_op["residual adds, rest"][0],
                                         backward - sum(b or 0.0 for _, b, _ in per_op.values()), None)
        ranked = sorted(per_op.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
        step = whole["forward + backward"]
        lines += [f"Forward {whole['forward'] * 1000:.1f} ms, backward {backward * 1000:.1f} ms (the whole step's "
                  "difference). Each op's backward is its own vector-Jacobian product timed alone, less its forward; "
                  "\"rest\" is what the whole step spends outside the timed ops (for the backward: the whole "
                  "backward less the ops' own, which the fused graph may overlap or spend differently).", "",
                  "| op | forward ms | backward ms | backward / forward | share of the step | calls |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {op} | {f * 1000:.2f} | {b * 1000:.2f} | {f'{b / f:.2f}x' if f > 0 and b > 0 else ''} | "
                  f"{(f + b) / step:.1%} | {'' if n is None else f'{n:g}'} |" for op, (f, b, n) in ranked]
        lines.append("")
    lines += ["## training step, whole", "",
              "| step | ms | vs forward |", "|---|---:|---:|"]
    lines += [f"| {what} | {seconds * 1000:.1f} | {seconds / whole['forward']:.2f}x |"
              for what, seconds in whole.items()]
    lines.append("")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
