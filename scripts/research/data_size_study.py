#!/usr/bin/env python3
"""How much training data does a specialist need to beat the base?

For each domain, adapters are trained on the first 25, 50, 100, 200, 500 and 1000 examples of one
seeded training pool, with the recipe of the library's own adapter for that domain (its
train_config.yaml: rank, learning rate, epochs, batch, sequence length) and its replay questions in the
same share of the mix (the recipe replays R questions beside its N examples; a run on n examples
replays R * n / N, at least one and at most the R there are), so up to N examples the amount of data is the
only thing that changes; above N the replay's share of the mix falls, and the page says so. Every adapter
answers the full benchmark of the library's adapter, with that adapter's inference settings; scores
get 95% intervals and a paired test against the base. The pool is the domain's data builder
(scripts/data/) asked for 1000+ training rows: its benchmark is checked to be the library's, so the
pool never overlaps it.

Adapters are kept under --work (default runs/research/data-size, not committed) and answers are
cached, so a rerun trains and answers only what is missing. Writes docs/research/data-size.md, .png
and .json.

    python scripts/research/data_size_study.py                # the committed numbers (hours on 2 cores)
    python scripts/research/data_size_study.py --domains math # one domain
    python scripts/research/data_size_study.py --quick        # a smoke run (tests)
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
from locomlx.registry import load_registry
from locomlx.scoring.stats import paired_p_value

from study_data import BUILDERS, built_pool, stored_rows
from study_domains import comma_list, studied_adapters
from study_files import interval, study_command, with_kept_domains, write_study, written_by
from study_training import own_examples, train_variant

ROOT = Path(__file__).resolve().parents[2]
SIZES = (25, 50, 100, 200, 500, 1000)
DOMAINS = ("math", "sentiment", "spam")


def _score(run) -> dict:
    return {"score": run.score, "ci95": [run.ci.low, run.ci.high], "per_example": [e.score for e in run.examples]}


def run(library: Path, domains: tuple[str, ...], sizes: tuple[int, ...], work: Path, pool_from: str,
        limit: int | None) -> dict:
    started = time.perf_counter()
    registry = load_registry(library)
    reference = registry.base_model.id if registry.base_model else None
    studied = []
    for domain, name in studied_adapters(registry, library, domains).items():
        folder = library / registry.adapters[name].path
        benchmark = folder / "eval" / "benchmark.jsonl"
        built = pool_from == "built" and domain in BUILDERS
        pool = built_pool(domain, benchmark, max(sizes)) if built else stored_rows(folder)
        results = json.loads((folder / "eval" / "results.json").read_text(encoding="utf-8"))
        inference = InferenceConfig(max_tokens=results["inference"]["max_tokens"], limit=limit,
                                    batch_size=results["inference"].get("batch_size", InferenceConfig.batch_size))
        rows = []
        for n in [n for n in sizes if n <= len(pool)]:
            print(f"{domain}: training on {n} examples", file=sys.stderr)
            facts = train_variant(library, folder, work / f"{folder.name}-n{n}", reference, pool[:n])
            rows.append({"examples": n, **facts})
        engine = Engine.load(reference)
        base = _score(run_benchmark(engine, benchmark, None, results["metric"], inference))
        for row in rows:
            name = f"{folder.name}-n{row['examples']}"
            engine.load_adapter(work / name, name)
            row.update(_score(run_benchmark(engine, benchmark, name, results["metric"], inference)))
            row["p_vs_base"] = paired_p_value(row["per_example"], base["per_example"])
            engine.unload_adapter(name)
            print(f"  n={row['examples']}: {row['score']:.3f} (base {base['score']:.3f})", file=sys.stderr)
        del engine
        studied.append({"domain": domain, "adapter": folder.name, "metric": results["metric"], "pool": len(pool),
                        "pool_from": "built" if built else "stored", "recipe_examples": own_examples(folder),
                        "base": base, "rows": rows, "library_score": results["adapter_score"]})
    for d in studied:
        best = max(d["rows"], key=lambda r: r["score"])
        for row in d["rows"]:
            row["p_vs_best"] = paired_p_value(row["per_example"], best["per_example"])
    return {"library": str(library), "base_model": reference, "limit": limit, "domains": studied,
            "seconds": time.perf_counter() - started}


def smallest_winner(domain: dict) -> int | None:
    """The fewest examples whose adapter beats the base significantly."""
    wins = [r["examples"] for r in domain["rows"] if r["p_vs_base"] < 0.05 and r["score"] > domain["base"]["score"]]
    return min(wins) if wins else None


def flattens_at(domain: dict) -> int:
    """The fewest examples whose score is not significantly below the best size's."""
    best = max(r["score"] for r in domain["rows"])
    return min(r["examples"] for r in domain["rows"] if r["score"] == best or r["p_vs_best"] >= 0.05)


def _plot(facts: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, d in enumerate(facts["domains"]):
        color = f"C{i}"
        x = [r["examples"] for r in d["rows"]]
        y = [r["score"] for r in d["rows"]]
        err = [[r["score"] - r["ci95"][0] for r in d["rows"]], [r["ci95"][1] - r["score"] for r in d["rows"]]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color, label=f"{d['domain']} adapter")
        ax.axhline(d["base"]["score"], color=color, linestyle="--", linewidth=1, label=f"{d['domain']} base")
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel("benchmark score (95% CI)")
    ax.set_title(f"Adapter score against training data ({facts['base_model']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def falls_after(domain: dict) -> str:
    """The sizes above the best one that score significantly below it (more data made this adapter worse)."""
    best = max(domain["rows"], key=lambda r: r["score"])
    worse = [r for r in domain["rows"] if r["examples"] > best["examples"] and r["p_vs_best"] < 0.05]
    return "".join(f"; at {r['examples']} the score falls significantly ({r['score']:.3f}, p {r['p_vs_best']:.2g} "
                   f"against {best['examples']})" for r in worse)


def replay_note(domain: dict) -> str:
    """Where the replay could not keep its share: the recipe's R questions are all there are, so a run on
    more examples than the recipe's N replays the same R, a smaller part of its mix."""
    recipe = next((r for r in domain["rows"] if r["examples"] == domain["recipe_examples"]), None)
    above = [r for r in domain["rows"] if r["examples"] > domain["recipe_examples"]]
    if recipe is None or not above:
        return ""
    share = lambda r: r["replayed"] / (r["examples"] + r["replayed"])  # noqa: E731
    return (f"Above {recipe['examples']} examples the replay stays at the recipe's {recipe['replayed']} questions "
            "(there are no more), so its share of the mix falls from "
            f"{share(recipe):.0%} to " + ", ".join(f"{share(r):.0%} at {r['examples']}" for r in above) + ".")


def _markdown(facts: dict, plot: Path) -> str:
    n = facts["limit"] or "all"
    lines = ["# How much data does a specialist need?", "",
             f"Written by {written_by(facts)}. Library `{facts['library']}`, base "
             f"`{facts['base_model']}`; {n} examples of each domain's benchmark. Each adapter is trained on the first "
             "n examples of one seeded pool with the recipe of the library's adapter for its domain, replay in the "
             "same share up to the recipe's size (the notes under the tables say where it could not). Intervals: "
             "95% bootstrap; p: paired test (McNemar for 0/1 scores, paired bootstrap otherwise) against the base, "
             "and against the best size.", ""]
    for d in facts["domains"]:
        lines += [f"## {d['domain']} ({d['metric']}; recipe of `{d['adapter']}`, trained on "
                  f"{d['recipe_examples']}; pool of {d['pool']} from the "
                  + ("domain's data builder)" if d["pool_from"] == "built" else "adapter's own data)"), "",
                  f"Base: {interval(d['base']['score'], d['base']['ci95'])}.", "",
                  "| examples | replayed | steps | training s | score | gain | p vs base | p vs best |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            lines.append(f"| {r['examples']} | {r['replayed']} | {r['steps']} | {r['train_seconds']:.0f} | "
                         f"{interval(r['score'], r['ci95'])} | {r['score'] - d['base']['score']:+.3f} | "
                         f"{r['p_vs_base']:.3g} | {r['p_vs_best']:.3g} |")
        note = replay_note(d)
        lines += ["", note, ""] if note else [""]
    lines += [f"![score against training examples]({plot.name})", "", "## The answer", ""]
    for d in facts["domains"]:
        winner, flat, largest = smallest_winner(d), flattens_at(d), max(r["examples"] for r in d["rows"])
        lines.append(f"- {d['domain']}: " + (f"{winner} examples already beat the base significantly"
                                             if winner else "no size tried beats the base significantly")
                     + (f"; scores stop rising significantly at {flat} examples" if flat < largest else
                        f"; the largest size tried ({largest}) is the best, so the study cannot say where gains "
                        "flatten")
                     + falls_after(d)
                     + f"; the library's own adapter, trained on {d['recipe_examples']} with this recipe, scores "
                     f"{d['library_score']:.3f} (its results.json).")
    return "\n".join(lines) + "\n"


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters-dir", default=None, help="The library (default: the shipped adapters/).")
    parser.add_argument("--out", default=str(ROOT / "docs" / "research" / "data-size"),
                        help="Output path without suffix (.md, .png and .json are written).")
    parser.add_argument("--work", default=str(ROOT / "runs" / "research" / "data-size"),
                        help="Where the study's adapters and data subsets are kept.")
    parser.add_argument("--domains", default=",".join(DOMAINS), help="Comma-separated domains of the library.")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="Comma-separated training set sizes.")
    parser.add_argument("--limit", type=int, default=None, help="Benchmark examples scored [all].")
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run: sizes 25 and 50 from the adapters' own data, 8 benchmark examples.")
    args = parser.parse_args()
    domains = comma_list(args.domains)
    sizes = tuple(sorted(int(s) for s in args.sizes.split(",") if s.strip()))
    pool_from = "built"
    if args.quick:
        sizes, args.limit, pool_from = (25, 50), 8, "stored"
    facts = run(library_dir(args.adapters_dir), domains, sizes, Path(args.work), pool_from, args.limit)
    facts = with_kept_domains(Path(args.out), facts, study_command(__file__),
                              ("library", "base_model", "limit"))
    write_study(Path(args.out), facts, lambda plot: _markdown(facts, plot), lambda: _plot(facts))


if __name__ == "__main__":
    main()
