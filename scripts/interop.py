#!/usr/bin/env python3
"""Do exported adapters answer as they do in locomlx? One table per run, written to docs/interop.md.

For each adapter and each target runtime: mlx-lm with `--adapter-path` (the adapter folder as it is), the
fused mlx-lm model (`locomlx fuse`), transformers + PEFT (`locomlx export --format peft`, needs the
[torch] extra), llama.cpp with the exported LoRA (`--format gguf`, needs llama-cpp-python) and llama.cpp
with the fused model as one GGUF. Each is compared with locomlx on the adapter's own benchmark questions:
the largest difference in next-token logits (after the prompt), whether the greedy answers are the same,
and the benchmark score of the target's own answers. A runtime that is not installed is a row that says so.

    python scripts/interop.py                                  # sentiment-rt, 50 questions
    python scripts/interop.py sentiment-rt spam-assassin --limit 20 --max-tokens 16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import locomlx  # noqa: F401 - the fast BLAS before mlx

ROOT = Path(__file__).resolve().parents[1]


def mlx_lm_target(base_dir, adapter_dir):
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load
    from mlx_lm.generate import generate

    model, tokenizer = load(str(base_dir), adapter_path=str(adapter_dir) if adapter_dir else None)

    def logits(tokens):
        return np.array(model(mx.array([tokens]))[0, -1].astype(mx.float32))

    def answer(tokens, max_tokens):
        return generate(model, tokenizer, tokens, max_tokens=max_tokens)

    return logits, answer


def peft_target(gguf_path, peft_dir):
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(peft_dir)).eval()
    eos = base.config.eos_token_id

    def logits(tokens):
        with torch.no_grad():
            return model(torch.tensor([tokens])).logits[0, -1].numpy().astype(np.float32)

    def answer(tokens, max_tokens):
        with torch.no_grad():
            out = model.generate(torch.tensor([tokens]), max_new_tokens=max_tokens, do_sample=False,
                                 eos_token_id=eos, pad_token_id=eos)
        return out[0, len(tokens):].tolist()

    return logits, answer


def llama_cpp_target(gguf_path, lora_path):
    import os

    import numpy as np
    from llama_cpp import Llama

    model = Llama(str(gguf_path), lora_path=str(lora_path) if lora_path else None, n_ctx=2048, verbose=False,
                  n_threads=os.cpu_count())

    def logits(tokens):
        import llama_cpp

        model.reset()
        model.eval(tokens)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(model.ctx), shape=(model.n_vocab(),)).copy()

    def answer(tokens, max_tokens):
        model.reset()
        out = []
        for token in model.generate(tokens, temp=0.0, top_k=1, reset=True):
            if token == model.token_eos() or len(out) >= max_tokens:
                break
            out.append(token)
        return out

    return logits, answer


def run(adapter_name: str, limit: int, max_tokens: int, work: Path) -> list[dict]:
    from locomlx.adapters.format import read_adapter
    from locomlx.engine.engine import Engine
    from locomlx.eval.run import load_benchmark
    from locomlx.export.fuse import fuse_adapter
    from locomlx.export.gguf import export_fused_gguf, export_gguf_lora
    from locomlx.export.peft import export_peft
    from locomlx.models.resolve import builtin_gguf_path, resolve_model
    from locomlx.prompt import example_messages, render_prompt
    from locomlx.scoring.metrics import choose_metric, score_answer

    import numpy as np

    library = ROOT / "adapters"
    adapter_dir = library / adapter_name
    examples = load_benchmark(adapter_dir / "eval" / "benchmark.jsonl")[:limit]
    metric = choose_metric(examples, None)
    engine = Engine.load()
    engine.load_adapter(adapter_dir, adapter_name)
    tokenizer = engine.tokenizer
    prompts = [render_prompt(tokenizer, example_messages(e.instruction, e.input)) for e in examples]
    engine.select(adapter_name)
    import mlx.core as mx

    reference_logits = [np.array(engine.model(mx.array([p]))[0, -1]) for p in prompts]
    reference = [engine.generate(example_messages(e.instruction, e.input), adapter_name, max_tokens).text
                 for e in examples]

    def score(texts):
        return float(np.mean([score_answer(metric, t, e).value for t, e in zip(texts, examples)]))

    rows = [{"adapter": adapter_name, "target": "locomlx", "max_logit_difference": 0.0, "greedy_agree": len(prompts),
             "score": score(reference), "n": len(prompts), "seconds": 0.0}]
    base_dir = resolve_model(None).path
    base_gguf = builtin_gguf_path("smollm2-135m")
    config = json.loads((base_dir / "config.json").read_text())
    adapter = read_adapter(adapter_dir, adapter_name)

    targets = {
        "mlx-lm --adapter-path": lambda: mlx_lm_target(base_dir, adapter_dir),
        "fused mlx-lm model": lambda: mlx_lm_target(fuse_adapter(adapter_name, library, work / "fused"), None),
        "transformers + PEFT": lambda: peft_target(base_gguf, export_peft(adapter, work / "peft", str(base_dir))),
        "llama.cpp + GGUF LoRA": lambda: llama_cpp_target(
            base_gguf, export_gguf_lora(adapter, work / "lora.gguf", config)),
        "llama.cpp, fused GGUF": lambda: llama_cpp_target(
            export_fused_gguf(fuse_adapter(adapter_name, library, work / "fused-gguf"), base_gguf, work / "fused.gguf"),
            None),
    }
    for target, build in targets.items():
        start = time.perf_counter()
        try:
            logits, answer = build()
        except ImportError as exc:
            rows.append({"adapter": adapter_name, "target": target, "missing": f"not installed ({exc.name})"})
            continue
        differences, texts = [], []
        for tokens, ref in zip(prompts, reference_logits):
            differences.append(float(np.abs(logits(tokens) - ref).max()))
            out = answer(tokens, max_tokens)
            if not isinstance(out, str):  # token ids, up to the first end-of-text token
                stops = set(tokenizer.eos_token_ids)
                out = tokenizer.decode(out[:next((i for i, t in enumerate(out) if t in stops), len(out))])
            texts.append(out)
        rows.append({"adapter": adapter_name, "target": target, "max_logit_difference": max(differences),
                     "greedy_agree": sum(a.strip() == b.strip() for a, b in zip(texts, reference)),
                     "score": score(texts), "n": len(prompts), "seconds": time.perf_counter() - start})
        print(f"  {target}: {rows[-1]}", file=sys.stderr)
    return rows


def markdown(rows: list[dict], args) -> str:
    lines = ["# Interop: exported adapters in other runtimes", "",
             f"Written by `python scripts/interop.py {' '.join(args.adapters)} --limit {args.limit} --max-tokens "
             f"{args.max_tokens}`: each adapter's first {args.limit} benchmark questions, greedy, on the embedded "
             "SmolLM2-135M. Logit difference: the largest absolute difference of next-token logits after each "
             "prompt, against locomlx (float32 on the CPU); agreement: greedy answers equal to locomlx's.", "",
             "| adapter | target | largest logit difference | greedy answers agree | score |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['adapter']} | {r['target']} | {r['missing']} | | |")
        else:
            lines.append(f"| {r['adapter']} | {r['target']} | {r['max_logit_difference']:.3g} | "
                         f"{r['greedy_agree']}/{r['n']} | {r['score']:.3f} |")
    lines += ["", "mlx-lm computes on the 4-bit weights as they are, locomlx and the fused float layers in higher "
              "precision, llama.cpp with its own kernels; differences of this size come from arithmetic, not from "
              "the adapter's conversion (a wrong layout moves logits by whole units).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("adapters", nargs="*", default=["sentiment-rt"])
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--output", default=str(ROOT / "docs" / "interop.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="locomlx-interop-") as work:
        for name in args.adapters:
            print(f"{name} ...", file=sys.stderr)
            rows += run(name, args.limit, args.max_tokens, Path(work) / name)
    page = markdown(rows, args)
    Path(args.output).write_text(page)
    print(page)


if __name__ == "__main__":
    main()
