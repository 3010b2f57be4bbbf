#!/usr/bin/env python3
"""How few bits can the base keep? The 1.58-bit question, answered on the library's own benchmarks.

The library's base is rounded after training to MLX's affine 8, 6, 4, 3 and 2 bits (groups of 64) and to
a ternary BitNet-b1.58-style grid (absmean scale per group of 64, and per tensor as BitNet has it),
every linear layer and the embedding (locomlx/models/lowbit.py). For each format, the base and every
active adapter (trained on the original base, attached unchanged) answer their domain's benchmark with
the inference settings of the adapter's own evaluation; scores get 95% intervals and a paired test
against the original base. Memory is the weights' stored size (codes plus 16-bit scales and biases)
and what the packed model holds in MLX; speed is greedy decoding in MLX's own quantized kernels on this
machine, beside the float32 path locomlx computes in on the CPU. The original is the embedded
GGUF as it ships (SmolLM2's Q4_1), so the formats above 4 bits show the cost of re-rounding, not the
gain over a full-precision model, which is not available offline.

Answers are cached per format (the base's identity carries the format), so a rerun only redoes what
changed, and `--domains` runs some domains (each run answers the original too, for its paired tests) and keeps
the page's other domains where they were measured with the same formats and limit, so the full study can be
done a few domains per sitting. Writes docs/research/lowbit.md, .png and .json.

    python scripts/research/lowbit_study.py              # every domain, full benchmarks (hours on 2 cores)
    python scripts/research/lowbit_study.py --domains spam,sentiment   # some domains, the others kept
    python scripts/research/lowbit_study.py --quick      # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.engine.engine import Engine
from locomlx.eval.run import InferenceConfig, run_benchmark
from locomlx.models.load import load_base
from locomlx.models.lowbit import FORMATS, LowBitFormat, pack_model, requantize, stored_bytes
from locomlx.models.resolve import resolve_model
from locomlx.registry import load_registry
from locomlx.scoring.stats import paired_p_value

import mlx.core as mx
from mlx.utils import tree_flatten
from study_domains import comma_list, studied_adapters
from study_files import interval, study_command, with_kept_domains, write_study, written_by

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL = "original"
SPEED_PROMPT = "Question: Name three things a student needs for a chemistry lab, and say why each matters.\nAnswer:"


def _decode_speed(model, tokenizer, tokens: int) -> float:
    """Greedy decode steps per second after a short prefill, with the model's own cache (no end token)."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([tokenizer.encode(SPEED_PROMPT)]), cache=cache)
    token = mx.argmax(logits[:, -1, :], axis=-1, keepdims=True)
    mx.eval(token)
    start = time.perf_counter()
    for _ in range(tokens):
        token = mx.argmax(model(token, cache=cache)[:, -1, :], axis=-1, keepdims=True)
        mx.eval(token)
    return tokens / (time.perf_counter() - start)


def _costs(reference: str, fmt: LowBitFormat | None, speed_tokens: int) -> dict:
    """Stored size, resident size in MLX, and decode speed of the format (float32 for the original)."""
    base = load_base(resolve_model(reference), "float32")
    stored = stored_bytes(base.model, fmt)
    if fmt:
        pack_model(base.model, fmt)
    resident = sum(v.nbytes for _, v in tree_flatten(base.model.parameters()))
    speed = _decode_speed(base.model, base.tokenizer, speed_tokens)
    return {"stored_mb": stored / 1e6, "resident_mb": resident / 1e6, "decode_tokens_per_second": speed,
            "kernel": f"MLX {fmt.bits}-bit quantized matmul" if fmt else "float32 (BLAS)"}


def _benchmarks(library: Path, registry, domains: tuple[str, ...] | None) -> list[dict]:
    """Each studied domain's active adapter with its benchmark and the settings of its own evaluation."""
    chosen = []
    for domain, name in studied_adapters(registry, library, domains).items():
        folder = library / registry.adapters[name].path
        results = json.loads((folder / "eval" / "results.json").read_text(encoding="utf-8"))
        chosen.append({"domain": domain, "adapter": name, "folder": folder, "metric": results["metric"],
                       "benchmark": folder / "eval" / "benchmark.jsonl",
                       "max_tokens": results["inference"]["max_tokens"],
                       "batch_size": results["inference"].get("batch_size", InferenceConfig.batch_size)})
    return chosen


def _score(run) -> dict:
    return {"score": run.score, "ci95": [run.ci.low, run.ci.high], "per_example": [e.score for e in run.examples],
            "seconds": run.generation_seconds}


def run(library: Path, domains: tuple[str, ...] | None, formats: list[str], limit: int | None,
        speed_tokens: int) -> dict:
    """Every format's costs, and per domain every format's base and adapter scores with a paired p against the
    original's (which every run answers, so that a run of some domains stands on its own)."""
    started = time.perf_counter()
    registry = load_registry(library)
    reference = registry.base_model.id if registry.base_model else None
    studied = _benchmarks(library, registry, domains)
    for d in studied:
        d["scores"] = {}
    costs = []
    for name in [ORIGINAL, *formats]:
        fmt = FORMATS.get(name)
        print(f"{name}: {fmt.describe if fmt else 'the base as it ships'}", file=sys.stderr)
        base = load_base(resolve_model(reference), "float32")
        engine = Engine(requantize(base, fmt) if fmt else base)
        for d in studied:
            engine.load_adapter(d["folder"], d["adapter"])
            inference = InferenceConfig(max_tokens=d["max_tokens"], limit=limit, batch_size=d["batch_size"])
            base_run = run_benchmark(engine, d["benchmark"], None, d["metric"], inference)
            adapter_run = run_benchmark(engine, d["benchmark"], d["adapter"], d["metric"], inference)
            engine.unload_adapter(d["adapter"])
            d["scores"][name] = {"base": _score(base_run), "adapter": _score(adapter_run)}
            print(f"  {d['domain']}: base {base_run.score:.3f}, {d['adapter']} {adapter_run.score:.3f}",
                  file=sys.stderr)
        del engine, base
        costs.append({"format": name, "describe": fmt.describe if fmt else "the base as it ships, float32 compute",
                      "code_bits": fmt.code_bits if fmt else None, **_costs(reference, fmt, speed_tokens)})
    for d in studied:
        original = d["scores"][ORIGINAL]
        for pair in d["scores"].values():
            for model in ("base", "adapter"):
                pair[model]["p_vs_original"] = paired_p_value(pair[model]["per_example"],
                                                              original[model]["per_example"])
    return {"library": str(library), "base_model": reference, "limit": limit, "speed_tokens": speed_tokens,
            "formats": [ORIGINAL, *formats], "costs": costs,
            "domains": [{k: str(v) if isinstance(v, Path) else v for k, v in d.items()} for d in studied],
            "seconds": time.perf_counter() - started}


def breaking_point(domain: dict, model: str) -> str | None:
    """The first format (most bits first) at which `model` (base or adapter) scores significantly below the
    original in this domain."""
    original = domain["scores"][ORIGINAL][model]["score"]
    for name, pair in domain["scores"].items():
        if name != ORIGINAL and pair[model]["p_vs_original"] < 0.05 and pair[model]["score"] < original:
            return name
    return None


def _plot(facts: dict):
    import matplotlib.pyplot as plt

    costs = facts["costs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = list(range(len(costs)))
    for d in sorted(facts["domains"], key=lambda d: d["domain"]):
        for model, style in (("adapter", "-o"), ("base", "--s")):
            scores = [d["scores"][c["format"]][model] for c in costs]
            y = [s["score"] for s in scores]
            err = [[v - s["ci95"][0] for v, s in zip(y, scores)], [s["ci95"][1] - v for v, s in zip(y, scores)]]
            left.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=f"{d['domain']} {model}")
    left.set_xticks(x, [c["format"] for c in costs], rotation=30)
    left.set_ylabel("benchmark score (95% CI)")
    left.set_title("quality by weight format")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    right.bar(x, [c["stored_mb"] for c in costs], color="tab:blue", alpha=0.6, label="stored MB")
    right.set_xticks(x, [c["format"] for c in costs], rotation=30)
    right.set_ylabel("stored weights (MB)")
    speed = right.twinx()
    speed.plot(x, [c["decode_tokens_per_second"] for c in costs], "-o", color="tab:red", label="decode tok/s")
    speed.set_ylabel("decode tokens/s (this machine)")
    right.set_title("memory and speed")
    fig.suptitle(f"Post-training low-bit copies of {facts['base_model']}")
    return fig


def _markdown(facts: dict, plot: Path) -> str:
    domains = sorted(facts["domains"], key=lambda d: d["domain"])
    n = facts["limit"] or "all"
    lines = ["# How few bits can the base keep?", "",
             f"Written by {written_by(facts)}. Library `{facts['library']}`, base "
             f"`{facts['base_model']}`; {n} examples of each benchmark, each adapter's own inference settings. "
             "Every format rounds the linear layers and the embedding after training; adapters are the library's, "
             "trained on the original and attached unchanged. Intervals: 95% bootstrap; p: paired test against "
             "the original (McNemar for 0/1 scores, paired bootstrap otherwise). Stored: codes plus 16-bit scales "
             "and biases, other weights at 16 bits. Resident: what the packed model holds in MLX. Decode: "
             f"{facts['speed_tokens']} greedy tokens at batch 1 in the kernel named, measured by the latest run.", "",
             "| format | bits/weight (code) | stored MB | resident MB | decode tok/s | kernel |",
             "|---|---:|---:|---:|---:|---|"]
    for c in facts["costs"]:
        bits = f"{c['code_bits']:.2f}" if c["code_bits"] else "as shipped"
        lines.append(f"| {c['format']} | {bits} | {c['stored_mb']:.0f} | {c['resident_mb']:.0f} | "
                     f"{c['decode_tokens_per_second']:.1f} | {c['kernel']} |")
    names = [d["domain"] for d in domains]
    lines += ["", "| format | " + " | ".join(f"{d} base | p | {d} adapter | p" for d in names) + " |",
              "|---|" + "---:|" * (4 * len(names))]
    for c in facts["costs"]:
        cells = []
        for d in domains:
            for model in ("base", "adapter"):
                s = d["scores"][c["format"]][model]
                cells += [interval(s["score"], s["ci95"]), f"{s['p_vs_original']:.3g}"]
        lines.append(f"| {c['format']} | " + " | ".join(cells) + " |")
    lines += ["", f"![score, memory and speed by format]({plot.name})", "", "## Where quality breaks", ""]
    for d in domains:
        base, adapter = breaking_point(d, "base"), breaking_point(d, "adapter")
        lines.append(f"- {d['domain']}: the adapter first scores significantly below the original at "
                     f"{adapter or 'no format tried'}; the base at {base or 'no format tried'}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters-dir", default=None, help="The library (default: the shipped adapters/).")
    parser.add_argument("--out", default=str(ROOT / "docs" / "research" / "lowbit"),
                        help="Output path without suffix (.md, .png and .json are written).")
    parser.add_argument("--domains", default=None,
                        help="Comma-separated domains of the library [every one with an active adapter]; the page "
                             "keeps the other domains of a page measured with the same formats and limit.")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"Comma-separated, of {', '.join(FORMATS)}.")
    parser.add_argument("--limit", type=int, default=None, help="Examples per benchmark [all].")
    parser.add_argument("--speed-tokens", type=int, default=64, help="Decode steps timed per format.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: two formats, 8 examples, 8 tokens.")
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        sys.exit(f"error: --formats: unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}.")
    if args.quick:
        formats, args.limit, args.speed_tokens = ["q4", "ternary-g64"], 8, 8
    facts = run(library_dir(args.adapters_dir), comma_list(args.domains), formats, args.limit, args.speed_tokens)
    facts = with_kept_domains(Path(args.out), facts, study_command(__file__),
                              ("library", "base_model", "limit", "formats"))
    write_study(Path(args.out), facts, lambda plot: _markdown(facts, plot), lambda: _plot(facts))


if __name__ == "__main__":
    main()
