#!/usr/bin/env python3
"""Does routing hold up as the swarm grows from 5 to 10 to 20 specialists?

The scaling library (libraries/scaling-20, built by `python scripts/build_swarm.py --set scaling`: the
shipped four domains plus sixteen procedural skills, each through the normal pipeline) is grown in its
registry's order. At each size N the study takes the first N domains as a library of their own (a view
under runs/research/scaling: the registry cut to those domains, the adapters linked, not copied), trains
the embedding router on it (`locomlx router train`), and runs the headline experiment
(locomlx/eval/swarm.py) on the union of the N benchmarks: routing accuracy with its 95% interval, the
misrouting cost (oracle minus routed, paired test), the union score of base, routed and oracle, the
router's latency, peak memory, and the time to load all N adapters with the memory they hold.
A domain whose adapter did not pass the bar stays in the view without a specialist: its questions are
asked all the same, and answered by the base model when the router sends them there.

Answers are cached, so a second run redoes only what changed. Writes docs/research/scaling.md, .png, .json.

    python scripts/research/scaling_study.py             # the committed numbers (after build_swarm --set scaling)
    python scripts/research/scaling_study.py --quick     # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.engine.engine import Engine
from locomlx.eval.swarm import SwarmSettings, run_swarm_experiment
from locomlx.registry import load_registry

import mlx.core as mx
import yaml
from study_files import interval, study_command, write_study

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "libraries" / "scaling-20"
SIZES = (5, 10, 20)


def domains_in_order(library: Path) -> list[str]:
    """The library's domains in the order their adapters were registered (the order it grew in)."""
    seen = []
    for entry in load_registry(library).adapters.values():
        if entry.domain not in seen:
            seen.append(entry.domain)
    return seen


def make_view(library: Path, domains: list[str], folder: Path) -> Path:
    """A library of `domains` alone: its registry cut to their adapters, each adapter folder a link."""
    data = yaml.safe_load((library / "registry.yaml").read_text(encoding="utf-8"))
    data["adapters"] = {name: e for name, e in (data.get("adapters") or {}).items() if e["domain"] in domains}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for entry in data["adapters"].values():
        link = folder / entry["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((library / entry["path"]).resolve(), target_is_directory=True)
    if (library / "router" / "general.jsonl").is_file():
        (folder / "router").mkdir()
        shutil.copyfile(library / "router" / "general.jsonl", folder / "router" / "general.jsonl")
    (folder / "registry.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return folder


def train_router(view: Path, per_domain: int) -> None:
    locomlx_cli = str(Path(sys.executable).parent / "locomlx")
    done = subprocess.run([locomlx_cli, "router", "train", "--per-domain", str(per_domain)], cwd=ROOT,
                          env={**os.environ, "LOCOMLX_ADAPTERS": str(view)}, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"router training on {view} failed:\n{done.stderr[-2000:]}")


def adapter_costs(view: Path) -> dict:
    """Seconds to load every adapter of the view into a fresh engine, and the memory they then hold."""
    registry = load_registry(view)
    engine = Engine.load(registry.base_model.id if registry.base_model else None)
    mx.eval(engine.base.model.parameters())
    before = mx.get_active_memory()
    started = time.perf_counter()
    names = [name for name, entry in registry.adapters.items() if entry.installed]
    for name in names:
        engine.load_adapter(view / registry.adapters[name].path, name)
    seconds = time.perf_counter() - started
    return {"adapters_loaded": len(names), "load_seconds": seconds,
            "load_ms_per_adapter": 1000 * seconds / max(len(names), 1),
            "adapters_resident_mb": (mx.get_active_memory() - before) / 2**20}


def run(library: Path, sizes: tuple[int, ...], limit: int | None, per_domain: int, work: Path) -> dict:
    started = time.perf_counter()
    order = domains_in_order(library)
    registry = load_registry(library)
    rows = []
    for size in sizes:
        if size > len(order):
            sys.exit(f"{library} has {len(order)} domains; a size of {size} needs more (scripts/build_swarm.py "
                     "--set scaling builds twenty).")
        view = make_view(library, order[:size], work / f"lib-{size}")
        print(f"size {size}: router training on {view}", flush=True)
        train_router(view, per_domain)
        mx.reset_peak_memory()  # each size's peak, not the largest so far
        swarm = run_swarm_experiment(view, SwarmSettings(limit=limit, reread=False, latency_queries=2),
                                     on_progress=lambda m: print("  " + m, flush=True))
        active = sum(e.active for e in load_registry(view).adapters.values())
        rows.append({"size": size, "domains": order[:size], "specialists": active, **adapter_costs(view), **swarm})
    return {"library": str(library.relative_to(ROOT) if library.is_relative_to(ROOT) else library),
            "base_model": registry.base_model.id if registry.base_model else None, "limit": limit,
            "rows": rows, "seconds": time.perf_counter() - started}


def weakest_domains(row: dict, n: int = 3) -> list[tuple[str, float, str]]:
    """The n routing classes the router recalls worst at this size, each with where most of its misses went.
    "general" is among them: the questions the base should answer (general ones, and those of domains
    without a specialist)."""
    out = []
    for domain, stats in row["routing_per_domain"].items():
        confused = row["routing_confusion"].get(domain, {})
        if not stats["support"]:
            continue
        misses = {k: v for k, v in confused.items() if k != domain and v}
        out.append((domain, stats["recall"], max(misses, key=misses.get) if misses else "-"))
    return sorted(out, key=lambda t: (t[1], t[0]))[:n]


def answer(facts: dict) -> str:
    first, last = facts["rows"][0], facts["rows"][-1]
    a, b = first["routing_accuracy_ci95"], last["routing_accuracy_ci95"]
    change = "falls" if b[1] < a[0] else "rises" if b[0] > a[1] else "does not change significantly"
    weakest = ", ".join(f"{d} (recall {r:.2f}, mostly to {to})" for d, r, to in weakest_domains(last)
                        if r < 1.0)
    return (f"From {first['size']} to {last['size']} domains routing accuracy {change} "
            f"({first['routing_accuracy']:.3f} -> {last['routing_accuracy']:.3f}, 95% intervals "
            f"[{a[0]:.3f}, {a[1]:.3f}] and [{b[0]:.3f}, {b[1]:.3f}], on the router's held-out queries); misrouting "
            f"costs {first['misrouting_cost']:+.3f} -> {last['misrouting_cost']:+.3f} of the union score "
            f"(p = {last['misrouting_p_value']:.2g} at {last['size']}). At {last['size']} the router recalls "
            f"worst: {weakest or 'none below 1.00'}. \"general\" holds the questions the base model should answer: "
            "general ones, and those of domains whose adapter was not promoted.")


def _plot(facts: dict):
    import matplotlib.pyplot as plt

    sizes = [r["size"] for r in facts["rows"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))

    def line(ax, values, label, color):
        scores = [v[0] for v in values]
        errors = [[s - v[1][0] for s, v in zip(scores, values)], [v[1][1] - s for s, v in zip(scores, values)]]
        ax.errorbar(sizes, scores, yerr=errors, marker="o", capsize=3, label=label, color=color)

    line(left, [(r["routing_accuracy"], r["routing_accuracy_ci95"]) for r in facts["rows"]], "routing accuracy",
         "tab:blue")
    left.set_title("Routing accuracy (95% CI)")
    for system, color in (("base", "tab:grey"), ("router", "tab:blue"), ("oracle", "tab:green")):
        line(right, [(r["systems"][system]["score"], r["systems"][system]["ci95"]) for r in facts["rows"]],
             {"router": "routed"}.get(system, system), color)
    right.set_title("Score on the union of the benchmarks (95% CI)")
    right.legend()
    for ax in (left, right):
        ax.set_xlabel("domains in the library")
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
    return fig


def _markdown(facts: dict, command: str, plot: Path) -> str:
    n = facts["limit"] or "all"
    lines = ["# Does routing hold up as the swarm grows?", "",
             f"Written by `{command}` ({facts['seconds'] / 60:.1f} min). Library `{facts['library']}`, base "
             f"`{facts['base_model']}`; at each size its first N domains (registry order), the embedding router "
             f"trained on them, {n} examples of each benchmark. Intervals: 95% bootstrap; misrouting cost: oracle "
             "minus routed on the union, with its paired p.", "", f"![scaling]({plot.name})", "",
             answer(facts), "",
             "| domains | specialists | routing accuracy | base | routed | oracle | misrouting cost (p) | router ms "
             "(median) | adapter load ms (each) | adapters resident MB | peak MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in facts["rows"]:
        scores = [interval(r["routing_accuracy"], r["routing_accuracy_ci95"])]
        scores += [interval(r["systems"][k]["score"], r["systems"][k]["ci95"]) for k in ("base", "router", "oracle")]
        lines.append(f"| {r['size']} | {r['specialists']} | {' | '.join(scores)} | {r['misrouting_cost']:+.3f} "
                     f"({r['misrouting_p_value']:.2g}) | {r['routing_latency_ms_median']:.1f} | "
                     f"{r['load_ms_per_adapter']:.0f} | {r['adapters_resident_mb']:.1f} | {r['peak_memory_mb']:.0f} |")
    last = facts["rows"][-1]
    lines += ["", f"Per domain at {last['size']} (routing recall; routed and oracle score on its benchmark):", "",
              "| domain | recall | routed | oracle | base |", "| --- | --- | --- | --- | --- |"]
    for d in last["domains"]:
        stats = last["routing_per_domain"].get(d, {"recall": 0.0})
        per = {k: last["systems"][k]["per_domain"].get(d) for k in ("router", "oracle", "base")}
        if per["base"] is None:
            continue
        lines.append(f"| {d} | {stats['recall']:.2f} | {per['router']:.3f} | {per['oracle']:.3f} | {per['base']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters-dir", default=None, help=f"The library [{LIBRARY.relative_to(ROOT)}].")
    parser.add_argument("--out", default=str(ROOT / "docs" / "research" / "scaling"),
                        help="Output path without suffix (.md, .png and .json are written).")
    parser.add_argument("--work", default=str(ROOT / "runs" / "research" / "scaling"), help="Where the views go.")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="Library sizes [5 10 20].")
    parser.add_argument("--limit", type=int, default=30,
                        help="Examples per benchmark in the union [30: 600 questions at 20 domains].")
    parser.add_argument("--quick", action="store_true", help="Smoke run: sizes 1 and 2, 4 examples per benchmark.")
    args = parser.parse_args()
    sizes, limit, per_domain = ((1, 2), 4, 10) if args.quick else (tuple(args.sizes), args.limit, 600)
    library = library_dir(args.adapters_dir) if args.adapters_dir else LIBRARY
    facts = run(library.resolve(), sizes, limit, per_domain, Path(args.work))
    command = study_command(__file__)
    write_study(Path(args.out), facts, lambda plot: _markdown(facts, command, plot), lambda: _plot(facts))


if __name__ == "__main__":
    main()
