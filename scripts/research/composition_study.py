#!/usr/bin/env python3
"""Can two specialists answer a question that needs both skills at once?

A cross-domain benchmark is built from the held-out benchmarks of two active adapters: item i pairs
question i of domain A with question i of domain B ("Do both tasks ... Task 1: <review> Task 2:
<sum>"), and the reply is scored on each part by that part's own metric, against that part's own
reference. Pairs whose choice sets overlap, and free-text domains, are left out, because their parts could
not be told apart in one reply. Each pair is answered by the base, each adapter alone, the composition
`A:w+B:(1-w)` at w = 0.3, 0.5 and 0.7 and `A:1+B:1` (both updates in full), and by routing (the
router picks one adapter, or the base, for the combined question). Scores have 95% intervals, and
"both" (both parts right) has a paired test against the better single adapter.

Answers of the base and of single adapters are cached; compositions are answered again on every run.
Writes docs/research/composition.md, .png and .json.

    python scripts/research/composition_study.py              # the committed numbers
    python scripts/research/composition_study.py --quick      # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.atomic import write_text_atomic
from locomlx.engine.engine import Engine
from locomlx.eval.run import InferenceConfig, load_benchmark, run_benchmark
from locomlx.registry import active_adapters, load_registry
from locomlx.router.load import load_router
from locomlx.scoring.metrics import score_answer
from locomlx.scoring.stats import bootstrap_ci, paired_p_value

from study_files import interval, study_command, write_study

ROOT = Path(__file__).resolve().parents[2]
SCORED_BY_PARTS = ("choice", "exact_match")  # metrics that find their part in a two-part reply
WEIGHTS = (0.3, 0.5, 0.7)
INSTRUCTION = ("Do both tasks. Task 1: {a} Task 2: {b} Reply on one line with the answer to task 1, then ' | ', "
               "then the answer to task 2.")


def _domain(library: Path, registry, domain: str, name: str) -> dict:
    folder = library / registry.adapters[name].path
    results = json.loads((folder / "eval" / "results.json").read_text(encoding="utf-8"))
    examples = load_benchmark(folder / "eval" / "benchmark.jsonl")
    return {"domain": domain, "adapter": name, "folder": folder, "metric": results["metric"], "examples": examples,
            "max_tokens": results["inference"]["max_tokens"],
            "choices": set(examples[0].extra.get("choices") or []) if examples else set()}


def pairs_of(domains: list[dict]) -> list[tuple[dict, dict]]:
    """Domain pairs whose parts can be scored in one reply."""
    return [(a, b) for a, b in itertools.combinations(domains, 2)
            if a["metric"] in SCORED_BY_PARTS and b["metric"] in SCORED_BY_PARTS
            and not (a["choices"] & b["choices"]) and not (a["metric"] == b["metric"] == "exact_match")]


def _combined(a: dict, b: dict, n: int, work: Path) -> Path:
    """The cross-domain benchmark of the pair: item i joins question i of each."""
    rows = [{"instruction": INSTRUCTION.format(a=x.instruction, b=y.instruction),
             "input": f"Task 1: {x.input}\nTask 2: {y.input}", "output": f"{x.output} | {y.output}",
             "metric": "exact_match"} for x, y in zip(a["examples"][:n], b["examples"][:n])]
    path = work / f"{a['domain']}+{b['domain']}.jsonl"
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _parts(outputs: list[str], a: dict, b: dict) -> dict:
    """Each part scored by its own metric against its own reference, and both together."""
    first = [score_answer(a["metric"], o, x).value for o, x in zip(outputs, a["examples"])]
    second = [score_answer(b["metric"], o, y).value for o, y in zip(outputs, b["examples"])]
    both = [float(s == t == 1.0) for s, t in zip(first, second)]
    return {"first": _cell(first), "second": _cell(second), "both": _cell(both)}


def _cell(values: list[float]) -> dict:
    ci = bootstrap_ci(values)
    return {"score": sum(values) / len(values), "ci95": [ci.low, ci.high], "per_example": values}


def _routed(engine: Engine, router, benchmark: Path, config: InferenceConfig) -> tuple[list[str], dict]:
    """The router's pick for each combined question, and each answer from the model it picked."""
    examples = load_benchmark(benchmark)[: config.limit]
    picks = [router.route(f"{e.instruction}\n\n{e.input}").adapter for e in examples]
    outputs = [""] * len(examples)
    for pick in set(picks):
        run = run_benchmark(engine, benchmark, pick, "exact_match", config)
        for i, p in enumerate(picks):
            if p == pick:
                outputs[i] = run.examples[i].output
    counts = {str(p or "base"): picks.count(p) for p in set(picks)}
    return outputs, counts


def run(library: Path, limit: int, router_kind: str | None, work: Path) -> dict:
    started = time.perf_counter()
    registry = load_registry(library)
    reference = registry.base_model.id if registry.base_model else None
    domains = [_domain(library, registry, d, n) for d, n in sorted(active_adapters(registry).items())]
    engine = Engine.load(reference)
    for d in domains:
        engine.load_adapter(d["folder"], d["adapter"])
    router = load_router(router_kind, engine, registry, library)
    studied = []
    for a, b in pairs_of(domains):
        n = min(limit, len(a["examples"]), len(b["examples"]))
        a, b = {**a, "examples": a["examples"][:n]}, {**b, "examples": b["examples"][:n]}
        benchmark = _combined(a, b, n, work)
        config = InferenceConfig(max_tokens=max(a["max_tokens"], b["max_tokens"]), limit=n)
        models = [("base", None), (f"{a['adapter']} alone", a["adapter"]), (f"{b['adapter']} alone", b["adapter"])]
        specs = [f"{a['adapter']}:{w:g}+{b['adapter']}:{round(1 - w, 2):g}" for w in WEIGHTS]
        specs.append(f"{a['adapter']}:1+{b['adapter']}:1")
        models += [(f"composition {spec}", engine.compose(spec)) for spec in specs]
        rows = []
        for label, model in models:
            outputs = [e.output for e in run_benchmark(engine, benchmark, model, "exact_match", config).examples]
            rows.append({"model": label, **_parts(outputs, a, b)})
            print(f"{a['domain']}+{b['domain']}: {label} both {rows[-1]['both']['score']:.3f}", file=sys.stderr)
        outputs, picks = _routed(engine, router, benchmark, config)
        rows.append({"model": f"routed ({router.name})", "picks": picks, **_parts(outputs, a, b)})
        singles = rows[1:3]
        best = max(singles, key=lambda r: r["both"]["score"])
        for row in rows:
            row["both"]["p_vs_best_single"] = paired_p_value(row["both"]["per_example"], best["both"]["per_example"])
        studied.append({"pair": f"{a['domain']}+{b['domain']}", "first": a["domain"], "second": b["domain"],
                        "metrics": [a["metric"], b["metric"]], "n": n, "best_single": best["model"], "rows": rows})
    skipped = sorted({d["domain"] for d in domains} - {d for s in studied for d in (s["first"], s["second"])})
    return {"library": str(library), "base_model": reference, "router": router.name, "pairs": studied,
            "left_out": skipped, "seconds": time.perf_counter() - started}


def _plot(facts: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(facts["pairs"]), 1), figsize=(5.5 * max(len(facts["pairs"]), 1), 4.5),
                             squeeze=False)
    for ax, pair in zip(axes[0], facts["pairs"]):
        y = range(len(pair["rows"]))
        bars = ((-0.25, "first", "tab:blue"), (0, "second", "tab:orange"), (0.25, "both", "tab:red"))
        for offset, key, color in bars:
            ax.barh([i + offset for i in y], [r[key]["score"] for r in pair["rows"]], 0.25, color=color,
                    label={"first": pair["first"], "second": pair["second"], "both": "both right"}[key])
        ax.set_yticks(list(y), [r["model"] for r in pair["rows"]], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("share of items right")
        ax.set_title(pair["pair"])
        ax.legend(fontsize=7)
    return fig


def _answer(pair: dict) -> str:
    """One sentence: does any composition get both parts right more often than the better single adapter,
    and, part by part, how much of each specialist's own score the best composition for that part keeps."""
    rows = {r["model"]: r for r in pair["rows"]}
    compositions = [r for r in pair["rows"] if r["model"].startswith("composition")]
    top = max(compositions, key=lambda r: r["both"]["score"])
    best = rows[pair["best_single"]]["both"]["score"]
    verdict = (f"the best composition ({top['model'].removeprefix('composition ')}) gets both parts right on "
               f"{top['both']['score']:.3f} of items, the better single adapter on {best:.3f}"
               + (" (significant)" if top["both"]["p_vs_best_single"] < 0.05 else " (no significant difference)"))
    kept = []
    for part, domain in (("first", pair["first"]), ("second", pair["second"])):
        alone = max((r for r in pair["rows"][1:3]), key=lambda r: r[part]["score"])
        most = max(compositions, key=lambda r: r[part]["score"])
        kept.append(f"{domain} {most[part]['score']:.3f} at {most['model'].removeprefix('composition ')} "
                    f"({alone['model']}: {alone[part]['score']:.3f})")
    return verdict + "; the best composition for each part scores " + " and ".join(kept) + "."


def _markdown(facts: dict, command: str, plot: Path) -> str:
    lines = ["# Composition: two skills in one question", "",
             f"Written by `{command}` ({facts['seconds'] / 60:.1f} min). Library `{facts['library']}`, base "
             f"`{facts['base_model']}`, router `{facts['router']}`. Each item joins question i of two domains' "
             "held-out benchmarks; each part is scored by its own metric. Intervals: 95% bootstrap; p: paired test "
             "of \"both right\" against the better single adapter."
             + (f" Left out (free-text metric or overlapping choices): {', '.join(facts['left_out'])}."
                if facts["left_out"] else ""), ""]
    for pair in facts["pairs"]:
        lines += [f"## {pair['pair']} ({pair['n']} items; {' and '.join(pair['metrics'])})", "",
                  f"| answered by | {pair['first']} part | {pair['second']} part | both right | p |",
                  "|---|---:|---:|---:|---:|"]
        for r in pair["rows"]:
            picks = f" (picked: {', '.join(f'{k} {v}' for k, v in sorted(r['picks'].items()))})" if "picks" in r else ""
            lines.append(f"| {r['model']}{picks} | {interval(r['first']['score'], r['first']['ci95'])} | "
                         f"{interval(r['second']['score'], r['second']['ci95'])} | "
                         f"{interval(r['both']['score'], r['both']['ci95'])} | {r['both']['p_vs_best_single']:.3g} |")
        lines.append("")
    lines += [f"![part scores by model]({plot.name})", "", "## The answer", ""]
    for pair in facts["pairs"]:
        lines.append(f"- {pair['pair']}: {_answer(pair)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters-dir", default=None, help="The library (default: the shipped adapters/).")
    parser.add_argument("--out", default=str(ROOT / "docs" / "research" / "composition"),
                        help="Output path without suffix (.md, .png and .json are written).")
    parser.add_argument("--work", default=str(ROOT / "runs" / "research" / "composition"),
                        help="Where the cross-domain benchmarks are written.")
    parser.add_argument("--limit", type=int, default=300, help="Items per pair [300].")
    parser.add_argument("--router", default=None, help="Router for the routed row [the default router].")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 6 items per pair, the arrow router.")
    args = parser.parse_args()
    limit, router = (6, "arrow") if args.quick else (args.limit, args.router)
    facts = run(library_dir(args.adapters_dir), limit, router, Path(args.work))
    command = study_command(__file__)
    write_study(Path(args.out), facts, lambda plot: _markdown(facts, command, plot), lambda: _plot(facts))


if __name__ == "__main__":
    main()
