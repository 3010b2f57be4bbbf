#!/usr/bin/env python3
"""Does voting across same-domain adapters beat the single best adapter?

Every domain gets at least three members: the library's active adapter, every other installed adapter the
registry lists in its domain, and variants trained from the active adapter's recipe and data with one
change each: another seed (another data order and initialisation) and twice the LoRA rank. Each member
answers the full benchmark alone (greedy); then the members answer together in one mixed-adapter batch
and vote (greedy answers, then 5 sampled answers each at T = 0.7). The ensembles are compared with the
best single member by a paired test, and their cost is generation time per question over the best
member's. Choosing the best member on the benchmark itself favours the single adapter, so a win of the
ensemble is conservative.

Variants are kept under --work (default runs/research/ensembles, not committed) and each member's answers
are cached, so a rerun trains only what is missing and answers again only the ensembles. Writes
docs/research/ensembles.md, .png and .json.

    python scripts/research/ensembles_study.py              # the committed numbers (hours on 2 cores)
    python scripts/research/ensembles_study.py --quick      # a smoke run (tests)
    python scripts/research/ensembles_study.py --domains sentiment,spam --variants seed   # fewer, cheaper
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.boost.ensemble import ensemble_members
from locomlx.engine.engine import Engine
from locomlx.eval.compare import compare_row
from locomlx.eval.run import InferenceConfig, run_benchmark
from locomlx.registry import load_registry
from locomlx.train.config import recorded_recipe

from study_domains import comma_list, studied_adapters
from study_files import interval, study_command, with_kept_domains, write_study, written_by
from study_training import train_variant

ROOT = Path(__file__).resolve().parents[2]
VOTES = 5
TEMPERATURE = 0.7


VARIANTS = ("seed", "rank")  # another seed (data order and initialisation); twice the rank, same LoRA scale


def _variants(library: Path, folder: Path, work: Path, reference: str | None,
              kinds: tuple[str, ...]) -> list[tuple[str, Path, str]]:
    """(name, folder, what changed) of the variants of `kinds` trained from the active adapter's recipe."""
    recipe = recorded_recipe(folder)
    rank = int(recipe.get("lora_rank", 16))
    alpha = float(recipe.get("lora_alpha") or 2 * rank)  # doubled with the rank: the same LoRA scale
    changes = {"seed": ("seed", {"seed": int(recipe.get("seed", 0)) + 1}),
               "rank": (f"rank{2 * rank}", {"lora_rank": 2 * rank, "lora_alpha": 2 * alpha})}
    made = []
    for tag, change in (changes[kind] for kind in kinds):
        out = work / f"{folder.name}-{tag}"
        print(f"{folder.name}: variant {tag}", file=sys.stderr)
        train_variant(library, folder, out, reference, **change)
        made.append((out.name, out, ", ".join(f"{k} {v:g}" for k, v in change.items())))
    return made


def run(library: Path, domains: tuple[str, ...] | None, kinds: tuple[str, ...], work: Path, limit: int | None,
        votes: int) -> dict:
    started = time.perf_counter()
    registry = load_registry(library)
    reference = registry.base_model.id if registry.base_model else None
    plans = []
    for domain, name in studied_adapters(registry, library, domains).items():
        folder = library / registry.adapters[name].path
        members = [(n, path, "library adapter" + (" (active)" if n == name else ""))
                   for n, path in ensemble_members(library, name)]
        if len(members) + len(kinds) < 2:
            sys.exit(f"error: {domain} has one adapter ({name}) and no variant to vote with; give --variants "
                     f"(one or more of {', '.join(VARIANTS)}) or install a second {domain} adapter.")
        plans.append((domain, name, folder, members + _variants(library, folder, work, reference, kinds)))
    engine = Engine.load(reference)
    domains = []
    for domain, name, folder, members in plans:
        results = json.loads((folder / "eval" / "results.json").read_text(encoding="utf-8"))
        benchmark = folder / "eval" / "benchmark.jsonl"
        greedy = InferenceConfig(max_tokens=results["inference"]["max_tokens"], limit=limit,
                                 batch_size=results["inference"].get("batch_size", InferenceConfig.batch_size))
        for member, path, _ in members:
            engine.load_adapter(path, member)
        singles = {m: run_benchmark(engine, benchmark, m, results["metric"], greedy) for m, _, _ in members}
        best = max(singles, key=lambda m: singles[m].score)
        names = [m for m, _, _ in members]
        rows = [{**asdict(compare_row(m, f"{m} alone" + (" (best)" if m == best else ""), singles[m],
                                      singles[best])), "what": what} for m, _, what in members]
        for label, config in ((f"ensemble of {len(names)}, greedy votes", replace(greedy, ensemble=names)),
                              (f"ensemble of {len(names)}, {votes} votes each (T={TEMPERATURE:g})",
                               replace(greedy, ensemble=names, votes=votes, vote_temperature=TEMPERATURE))):
            voted = run_benchmark(engine, benchmark, name, results["metric"], config)
            rows.append({**asdict(compare_row(name, label, voted, singles[best])), "what": "vote"})
            print(f"{domain}: {label} {voted.score:.3f} (best single {best} {singles[best].score:.3f})",
                  file=sys.stderr)
        for member in names:
            engine.unload_adapter(member)
        domains.append({"domain": domain, "active": name, "metric": results["metric"], "best_single": best,
                        "members": names, "rows": rows})
    return {"library": str(library), "base_model": reference, "limit": limit, "votes": votes, "domains": domains,
            "seconds": time.perf_counter() - started}


def _plot(facts: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(d["rows"]) for d in facts["domains"])
    for i, d in enumerate(facts["domains"]):
        for j, r in enumerate(d["rows"]):
            color = "tab:red" if r["what"] == "vote" else ("tab:blue" if "(best)" in r["decoding"] else "tab:grey")
            ax.bar(i + j * width, r["score"], width * 0.9, color=color,
                   yerr=[[r["score"] - r["ci95"][0]], [r["ci95"][1] - r["score"]]], capsize=2)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(facts["domains"]))], [d["domain"] for d in facts["domains"]])
    ax.set_ylabel("benchmark score (95% CI)")
    ax.set_title("Single members (grey; best in blue) and their ensembles (red)")
    ax.grid(alpha=0.3, axis="y")
    return fig


def _markdown(facts: dict, plot: Path) -> str:
    n = facts["limit"] or "all"
    lines = ["# Do ensembles of same-domain adapters beat the best single one?", "",
             f"Written by {written_by(facts)}. Library `{facts['library']}`, base "
             f"`{facts['base_model']}`; {n} examples of each benchmark, each active adapter's own settings. "
             "Intervals: 95% bootstrap; p: paired test against the best single member (chosen on this benchmark, "
             "which favours it); cost: generation time per question over the best member's.", ""]
    for d in facts["domains"]:
        lines += [f"## {d['domain']} ({d['metric']}; {len(d['members'])} members)", "",
                  "| answered by | members' difference | score | gain vs best | p | latency / question | cost |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            gain = "" if r["gain"] is None else f"{r['gain']:+.3f}"
            p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
            cost = "" if r["cost"] is None else f"{r['cost']:.1f}x"
            lines.append(f"| {r['decoding']} | {r['what']} | {interval(r['score'], r['ci95'])} | {gain} | {p} | "
                         f"{r['latency_seconds'] * 1000:.0f} ms | {cost} |")
        lines.append("")
    lines += [f"![members and ensembles]({plot.name})", "", "## The answer", ""]
    for d in facts["domains"]:
        votes = [r for r in d["rows"] if r["what"] == "vote"]
        verdicts = []
        for r in votes:
            if r["p_value"] is not None and r["p_value"] < 0.05:
                verdicts.append(f"{r['decoding']} is significantly {'better' if r['gain'] > 0 else 'worse'} "
                                f"({r['gain']:+.3f}, {r['cost']:.1f}x the time)")
            else:
                verdicts.append(f"{r['decoding']}: no significant difference ({r['gain']:+.3f})")
        lines.append(f"- {d['domain']} (best single: {d['best_single']}): " + "; ".join(verdicts) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters-dir", default=None, help="The library (default: the shipped adapters/).")
    parser.add_argument("--out", default=str(ROOT / "docs" / "research" / "ensembles"),
                        help="Output path without suffix (.md, .png and .json are written).")
    parser.add_argument("--work", default=str(ROOT / "runs" / "research" / "ensembles"),
                        help="Where the trained variants are kept.")
    parser.add_argument("--limit", type=int, default=None, help="Benchmark examples scored [all].")
    parser.add_argument("--domains", default=None,
                        help="Comma-separated domains of the library [every one with an active adapter].")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"Comma-separated variants trained per domain, of {', '.join(VARIANTS)} [all].")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 6 examples, 2 votes.")
    args = parser.parse_args()
    limit, votes = (6, 2) if args.quick else (args.limit, VOTES)
    kinds = comma_list(args.variants) or ()
    unknown = [k for k in kinds if k not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    facts = run(library_dir(args.adapters_dir), comma_list(args.domains), kinds, Path(args.work), limit, votes)
    facts = with_kept_domains(Path(args.out), facts, study_command(__file__),
                              ("library", "base_model", "limit", "votes"))
    write_study(Path(args.out), facts, lambda plot: _markdown(facts, plot), lambda: _plot(facts))


if __name__ == "__main__":
    main()
