#!/usr/bin/env python3
"""Does user feedback help the router on questions unlike its training data?

Feedback is simulated from the shifted routing set (LIBRARY/router/shifted.jsonl): its `feedback` rows
are given, in a seeded order, as the first 10, 50, 200 and 1000 verdicts a class of students would
give (the router's answer when it routed right — `/good` — and the right domain when it did not —
`/wrong DOMAIN`; either way the label is the row's domain). After each, the embedding router is
retrained the way `locomlx router train --feedback` does (same queries, same calibration, each
correction counted `weight` times) and judged on the shifted set's disjoint `test` rows and on the
in-distribution held-out queries `locomlx router eval` uses. The shifted set has no reference
answers, so the cost of misrouting is counted as the share of test queries sent to a *wrong
specialist* (worse than the base model, which at least answers plainly) and the share sent to the
base model when a specialist was right.

Writes docs/research/feedback.md (table, exact command) and docs/research/feedback.png (plot).

    python scripts/research/feedback_study.py              # the committed numbers (about 6 minutes)
    python scripts/research/feedback_study.py --quick      # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.engine.engine import Engine
from locomlx.registry import active_adapters, load_registry
from locomlx.router.data import routing_queries, shifted_queries
from locomlx.router.decision import GENERAL
from locomlx.router.embedding import FEEDBACK_WEIGHT, embed_queries, fit_with_feedback
from locomlx.scoring.stats import bootstrap_ci, paired_p_value

import numpy as np
from study_files import interval, study_command, write_study

ROOT = Path(__file__).resolve().parents[2]
SIZES = (0, 10, 50, 200, 1000)
WEIGHTS = (1.0, 5.0, 20.0)  # 20 reached the goal at 200 verdicts: the default (FEEDBACK_WEIGHT)
GOAL = 0.95


def _scores(picked: list[str], truth: list[str]) -> dict:
    correct = [float(p == t) for p, t in zip(picked, truth)]
    interval = bootstrap_ci(correct)
    wrong_specialist = [p != t and p != GENERAL for p, t in zip(picked, truth)]
    wrong_base = [p != t and p == GENERAL for p, t in zip(picked, truth)]
    return {"accuracy": sum(correct) / len(correct), "ci95": [interval.low, interval.high],
            "wrong_specialist": float(np.mean(wrong_specialist)), "wrong_base": float(np.mean(wrong_base)),
            "per_example": correct}


def run(library: Path, sizes: tuple[int, ...], weights: tuple[float, ...], per_domain: int, seed: int,
        test_limit: int | None) -> dict:
    started = time.perf_counter()
    registry = load_registry(library)
    engine = Engine.load(registry.base_model.id if registry.base_model else None)
    adapters = active_adapters(registry)
    classes = sorted(adapters) + [GENERAL]
    library_queries = [q for q in routing_queries(registry, library, "train", per_domain, seed)
                       if q.domain in classes]
    pool = shifted_queries(registry, library, "feedback")
    test = shifted_queries(registry, library, "test")[:test_limit]
    held = routing_queries(registry, library, "heldout")
    if not pool or not test:
        sys.exit(f"error: {library / 'router' / 'shifted.jsonl'} has no feedback/test rows; build it with "
                 "`python scripts/data/shifted_routing.py`.")
    random.Random(seed).shuffle(pool)
    sizes = tuple(n for n in sizes if n <= len(pool))
    texts = [q.text for q in library_queries + pool + test + held]
    print(f"embedding {len(texts)} queries ({len(library_queries)} library, {len(pool)} feedback pool, "
          f"{len(test)} shifted test, {len(held)} held-out)", file=sys.stderr)
    features = embed_queries(engine, texts)
    n_lib, n_pool, n_test = len(library_queries), len(pool), len(test)
    lib_f, pool_f = features[:n_lib], features[n_lib:n_lib + n_pool]
    test_f = features[n_lib + n_pool:n_lib + n_pool + n_test]
    held_f = features[n_lib + n_pool + n_test:]
    lib_domains = [q.domain for q in library_queries]
    test_truth, held_truth = [q.domain for q in test], [q.domain for q in held]
    rows = []
    for weight in weights:
        for n in sizes:
            given = pool[:n]
            train_f = np.concatenate([lib_f, pool_f[:n]])
            domains = lib_domains + [q.domain for q in given]
            fitted, _ = fit_with_feedback(train_f, [q.text for q in library_queries + given], domains, classes, n,
                                          weight)
            shifted = _scores(fitted.predict(test_f), test_truth)
            in_dist = _scores(fitted.predict(held_f), held_truth)
            rows.append({"weight": weight, "feedback": n, "shifted": shifted, "in_distribution": in_dist})
            print(f"weight {weight:g}, {n:4d} verdicts: shifted {shifted['accuracy']:.3f}, "
                  f"held-out {in_dist['accuracy']:.3f}", file=sys.stderr)
    baseline = {"shifted": rows[0]["shifted"]["per_example"], "held": rows[0]["in_distribution"]["per_example"]}
    for row in rows:
        row["shifted"]["p_vs_none"] = paired_p_value(row["shifted"]["per_example"], baseline["shifted"])
        row["in_distribution"]["p_vs_none"] = paired_p_value(row["in_distribution"]["per_example"], baseline["held"])
    return {"library": str(library), "classes": classes, "library_queries": n_lib, "pool": n_pool,
            "test_queries": n_test, "heldout_queries": len(held), "seed": seed, "rows": rows,
            "seconds": time.perf_counter() - started}


def _plot(facts: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "shifted", "shifted set (test rows)"),
                           (axes[1], "in_distribution", "in-distribution held-out queries")):
        for weight in dict.fromkeys(r["weight"] for r in facts["rows"]):
            rows = [r for r in facts["rows"] if r["weight"] == weight]
            x = [max(r["feedback"], 1) for r in rows]
            y = [r[key]["accuracy"] for r in rows]
            err = [[r[key]["accuracy"] - r[key]["ci95"][0] for r in rows],
                   [r[key]["ci95"][1] - r[key]["accuracy"] for r in rows]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"correction weight {weight:g}")
        if key == "shifted":
            ax.axhline(GOAL, color="grey", linestyle="--", linewidth=1, label=f"goal {GOAL}")
        ax.set_xscale("log")
        ax.set_xlabel("verdicts given (0 plotted at 1)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("routing accuracy (95% CI)")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Embedding router retrained with simulated user feedback")
    return fig


def _markdown(facts: dict, command: str, plot: Path) -> str:
    def cell(s: dict) -> str:
        return interval(s["accuracy"], s["ci95"])

    lines = ["# Does feedback help the router?", "",
             f"Written by `{command}` ({facts['seconds'] / 60:.1f} min). Library `{facts['library']}`, classes "
             f"{', '.join(facts['classes'])}; the router trains on {facts['library_queries']} library queries plus "
             f"the first N of {facts['pool']} shifted-set verdicts (seed {facts['seed']}), and is judged on "
             f"{facts['test_queries']} disjoint shifted test queries and {facts['heldout_queries']} in-distribution "
             "held-out queries. Intervals: 95% bootstrap; p: paired test against no feedback (same weight row "
             "0). Misrouted to a specialist = sent to the wrong adapter; to base = a specialist was right but the "
             "base model answered.", "",
             "| correction weight | verdicts | shifted accuracy | p | misrouted to a specialist | to base | "
             "held-out accuracy | p |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in facts["rows"]:
        s, h = r["shifted"], r["in_distribution"]
        lines.append(f"| {r['weight']:g} | {r['feedback']} | {cell(s)} | {s['p_vs_none']:.3g} | "
                     f"{s['wrong_specialist']:.3f} | {s['wrong_base']:.3f} | {cell(h)} | {h['p_vs_none']:.3g} |")
    lines += ["", f"![accuracy against verdicts given]({plot.name})", ""]
    default = [r for r in facts["rows"] if r["weight"] == FEEDBACK_WEIGHT]
    reached = [r["feedback"] for r in default if r["shifted"]["accuracy"] >= GOAL]
    none, best = default[0], default[-1]
    lines.append(f"At the default weight ({FEEDBACK_WEIGHT:g}, what `router train --feedback` uses): shifted "
                 f"accuracy {none['shifted']['accuracy']:.3f} with no feedback, {best['shifted']['accuracy']:.3f} "
                 f"after {best['feedback']} verdicts; the goal of {GOAL} is "
                 + (f"reached from {reached[0]} verdicts on." if reached else "not reached in this run.")
                 + f" Held-out accuracy moves from {none['in_distribution']['accuracy']:.3f} to "
                 f"{best['in_distribution']['accuracy']:.3f}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters-dir", default=None, help="The library (default: the shipped adapters/).")
    parser.add_argument("--out", default=str(ROOT / "docs" / "research" / "feedback"),
                        help="Output path without suffix (.md, .png and .json are written).")
    parser.add_argument("--per-domain", type=int, default=600, help="Library training queries per domain.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="Smoke run: few queries, two sizes, one weight.")
    args = parser.parse_args()
    library = library_dir(args.adapters_dir)
    if args.quick:
        facts = run(library, (0, 10), (FEEDBACK_WEIGHT,), min(args.per_domain, 50), args.seed, 40)
    else:
        facts = run(library, SIZES, WEIGHTS, args.per_domain, args.seed, None)
    command = study_command(__file__)
    write_study(Path(args.out), facts, lambda plot: _markdown(facts, command, plot), lambda: _plot(facts))

if __name__ == "__main__":
    main()
