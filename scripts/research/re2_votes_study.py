#!/usr/bin/env python3
"""How much do RE2 and self-consistency help, and what do they cost?

For every active adapter, on its full benchmark with its own evaluation's settings: greedy answers
(1 vote) and self-consistency with 5, 9 and 15 sampled votes, each with and without RE2 (the question
read twice). Every question gets one pool of 15 samples (per RE2 setting) and k votes are the vote over
its first k samples: a k-vote answer from k independent samples, as a separate run would draw, for a
third of the generation. Latency is timed apart from the pool: each vote count (1 = greedy) samples the
benchmark's first 32 questions on its own, one count after the other in the same process, because the
engine prefills each prompt once for all of its samples (engine/prefix.py), so k samples do not cost k/15
of 15. The sampling temperature is chosen per domain
on a validation split, never on the benchmark: rows of the domain's data pool past the adapter's own training
rows (the data builder returns the same first rows when asked for more, so these are unseen), scored at 5 votes
for each candidate temperature. Every row has a 95% interval, a paired test against greedy and its latency cost
(generation time per question over greedy's).

Sample pools are kept under --work (not committed), saved every few questions, and greedy and
validation answers are cached, so a rerun generates only what is missing. Writes
docs/research/re2-votes.md, .png and .json.

    python scripts/research/re2_votes_study.py              # the committed numbers (hours on 2 cores)
    python scripts/research/re2_votes_study.py --domains spam,math --limit 100   # fewer, smaller
    python scripts/research/re2_votes_study.py --quick      # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import locomlx  # first: preloads the CBLAS
from locomlx.adapters.library import library_dir
from locomlx.atomic import write_text_atomic
from locomlx.boost.sampling import Candidate, VoteSettings, sample_candidates
from locomlx.data.records import read_examples
from locomlx.engine.engine import Engine
from locomlx.eval.compare import compare_row
from locomlx.eval.run import (
    Answers,
    InferenceConfig,
    answers_cache_path,
    load_benchmark,
    run_benchmark,
    scored_run,
    vote_for_example,
)
from locomlx.prompt import example_messages
from locomlx.provenance import file_sha256
from locomlx.registry import load_registry

from study_data import BUILDERS, built_pool, stored_rows
from study_domains import comma_list, studied_adapters
from study_files import interval, study_command, with_kept_domains, write_study, written_by

ROOT = Path(__file__).resolve().parents[2]
VOTES = (1, 5, 9, 15)
TEMPERATURES = (0.3, 0.7, 1.0)
VALIDATION = 100  # validation questions per domain
POOL_CHUNK = 16  # questions sampled between saves of a pool
TIMED = 32  # questions each vote count's latency is timed on


def _validation(domain: str, folder: Path, work: Path, size: int, quick: bool) -> Path:
    """A validation file of `size` questions the adapter never trained on (quick: its own last rows)."""
    own = len(read_examples(folder / "training" / "dataset.jsonl")[0])
    if quick or domain not in BUILDERS:
        if not quick:
            sys.exit(f"error: {domain} has no data builder in scripts/data/, so there is no unseen validation "
                     "split to choose the temperature on.")
        rows = stored_rows(folder)[-size:]
    else:
        rows = built_pool(domain, folder / "eval" / "benchmark.jsonl", own + size)[own:]
    path = work / f"{folder.name}-validation.jsonl"
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _chosen_temperature(engine: Engine, adapter: str, validation: Path, metric: str, greedy: InferenceConfig,
                        temperatures: tuple[float, ...]) -> tuple[float, dict[str, float]]:
    """The temperature whose 5-vote answers score best on the validation split (ties: the lowest)."""
    scores = {}
    for t in temperatures:
        config = replace(greedy, votes=5, vote_temperature=t, limit=None)
        scores[f"{t:g}"] = run_benchmark(engine, validation, adapter, metric, config).score
    best = max(temperatures, key=lambda t: (scores[f"{t:g}"], -t))
    return best, scores


def _pool_path(engine: Engine, adapter: str, benchmark: Path, metric: str, config: InferenceConfig,
               work: Path) -> Path:
    """Where a pool is kept: named by the answers cache's key for these settings (which leaves out the limit)."""
    return work / f"pool-{answers_cache_path(engine, adapter, file_sha256(benchmark), config, metric).stem}.json"


def _sample_pool(engine: Engine, adapter: str, benchmark: Path, examples: list, metric: str, config: InferenceConfig,
                 work: Path) -> tuple[list[list[Candidate]], dict]:
    """`config.votes` samples for each of the benchmark's first `config.limit` questions, and the pool's cost
    (generated tokens, seconds). Saved to `work` every POOL_CHUNK questions under the name of the answers
    cache's key for these settings (the key leaves out the limit), so a rerun resumes, a larger limit extends
    the pool, and a change of weights, data or settings starts afresh. Chunks are whole and seeded by their
    first question's index, so a pool grown in steps equals one made at once. `examples`: the whole
    benchmark's."""
    wanted = min(config.limit or len(examples), len(examples))
    path = _pool_path(engine, adapter, benchmark, metric, config, work)
    pool = json.loads(path.read_text()) if path.is_file() else {"questions": [], "tokens": 0, "seconds": 0.0}
    for start in range(len(pool["questions"]), wanted, POOL_CHUNK):  # whole chunks: seeds never shift
        chunk = examples[start:start + POOL_CHUNK]
        conversations = [example_messages(ex.instruction, ex.input, reread=config.reread) for ex in chunk]
        settings = VoteSettings(config.votes, config.vote_temperature, config.seed + start)
        candidates, batch = sample_candidates(engine, conversations, [adapter], settings, config.max_tokens,
                                              config.batch_size)
        pool["questions"] += [[asdict(c) for c in group] for group in candidates]
        pool["tokens"] += batch.generation_tokens
        pool["seconds"] += batch.seconds
        pool.setdefault("chunk_seconds_per_question", []).append(batch.seconds / len(chunk))
        write_text_atomic(path, json.dumps(pool))
        print(f"    pool {len(pool['questions'])}/{wanted}", file=sys.stderr)
    return [[Candidate(**c) for c in group] for group in pool["questions"][:wanted]], pool


def seconds_per_question(pool: dict) -> float:
    """A pool's generation seconds per question: the median over its chunks where they were timed one by one (a
    pool made over several sittings may have chunks that ran while the process was paused for other work,
    reading far slower than the rest), else its mean (pools saved before chunks were timed)."""
    timed = pool.get("chunk_seconds_per_question")
    return statistics.median(timed) if timed else pool["seconds"] / len(pool["questions"])


def tokens_per_second(pool: dict) -> float:
    """A pool's generation speed: its tokens per question over `seconds_per_question`, so that a pause skews
    neither."""
    seconds = seconds_per_question(pool)
    return pool["tokens"] / len(pool["questions"]) / seconds if seconds else 0.0


def _timed_latency(engine: Engine, adapter: str, benchmark: Path, examples: list, metric: str,
                   config: InferenceConfig, votes: tuple[int, ...], work: Path, pool: dict) -> dict[int, float]:
    """Generation seconds per question of sampling k votes (k = 1: greedy) for the benchmark's first TIMED
    questions (fewer under a smaller limit), each k its own call, one after the other; kept in `pool` (as
    `_sample_pool` returned it) and its file, so that a rerun times nothing again."""
    path = _pool_path(engine, adapter, benchmark, metric, config, work)
    timed = pool.setdefault("latency_per_question", {})
    chunk = examples[: min(TIMED, config.limit or TIMED)]
    conversations = [example_messages(ex.instruction, ex.input, reread=config.reread) for ex in chunk]
    for k in votes:
        if str(k) not in timed:
            settings = VoteSettings(k, config.vote_temperature, config.seed)
            _, batch = sample_candidates(engine, conversations, [adapter], settings, config.max_tokens,
                                         config.batch_size)
            timed[str(k)] = batch.seconds / len(chunk)
            write_text_atomic(path, json.dumps(pool))
    return {k: timed[str(k)] for k in votes}


def _voted_run(engine: Engine, adapter: str, benchmark: Path, examples: list, metric: str, config: InferenceConfig,
               pool: list[list[Candidate]], cost: dict, votes: int, latency: float):
    """The benchmark's first `config.limit` `examples` answered by the vote over each question's first `votes`
    samples of the pool, taking `latency` seconds per question."""
    started = time.perf_counter()
    examples = examples[: config.limit]
    decided = [vote_for_example(metric, ex, group[:votes]) for ex, group in zip(examples, pool)]
    seconds = latency * len(examples)
    answers = Answers([v.winner.text for v in decided], tokens_per_second(cost), seconds, [v.split for v in decided])
    return scored_run(engine, benchmark, examples, adapter, metric, answers, replace(config, votes=votes), started)


def run(library: Path, domains: tuple[str, ...] | None, votes: tuple[int, ...], temperatures: tuple[float, ...],
        limit: int | None, work: Path, validation_size: int, quick: bool) -> dict:
    started = time.perf_counter()
    registry = load_registry(library)
    reference = registry.base_model.id if registry.base_model else None
    chosen = studied_adapters(registry, library, domains)
    engine = Engine.load(reference)
    work.mkdir(parents=True, exist_ok=True)
    studied = []
    for domain, name in chosen.items():
        folder = library / registry.adapters[name].path
        results = json.loads((folder / "eval" / "results.json").read_text(encoding="utf-8"))
        metric = results["metric"]
        benchmark = folder / "eval" / "benchmark.jsonl"
        examples = load_benchmark(benchmark)
        engine.load_adapter(folder, name)
        greedy_config = InferenceConfig(max_tokens=results["inference"]["max_tokens"], limit=limit,
                                        batch_size=results["inference"].get("batch_size", InferenceConfig.batch_size))
        validation = _validation(domain, folder, work, validation_size, quick)
        temperature, tried = _chosen_temperature(engine, name, validation, metric, greedy_config, temperatures)
        print(f"{domain}: temperature {temperature:g} chosen on {validation.name} ({tried})", file=sys.stderr)
        greedy = run_benchmark(engine, benchmark, name, metric, greedy_config)
        rows, greedy_latency = [], None
        for reread in (False, True):
            first = greedy if not reread else run_benchmark(engine, benchmark, name, metric,
                                                            replace(greedy_config, reread=True))
            pool_config = replace(greedy_config, reread=reread, votes=max(votes), vote_temperature=temperature)
            pool, cost = _sample_pool(engine, name, benchmark, examples, metric, pool_config, work)
            latency = _timed_latency(engine, name, benchmark, examples, metric, pool_config, votes, work,
                                     cost)
            greedy_latency = greedy_latency or latency[1]
            for n in votes:
                run_ = first if n == 1 else _voted_run(engine, name, benchmark, examples, metric, pool_config, pool,
                                                       cost, n, latency[n])
                label = ("RE2, " if reread else "") + ("greedy" if n == 1 else f"{n} votes")
                row = asdict(compare_row(name, label, run_, greedy))
                timed = {"latency_seconds": latency[n],
                         "cost": latency[n] / greedy_latency if run_ is not greedy else None}
                rows.append({**row, **timed, "votes": n, "reread": reread})
                print(f"  {label}: {run_.score:.3f}", file=sys.stderr)
        engine.unload_adapter(name)
        studied.append({"domain": domain, "adapter": name, "metric": metric, "temperature": temperature,
                        "validation_scores": tried, "validation_questions": validation_size, "rows": rows})
    return {"library": str(library), "base_model": reference, "limit": limit, "pool": max(votes),
            "latency_timed_on": TIMED, "domains": studied, "seconds": time.perf_counter() - started}


def _plot(facts: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, d in enumerate(facts["domains"]):
        for reread, style in ((False, "-o"), (True, "--s")):
            rows = [r for r in d["rows"] if r["reread"] == reread]
            ax.plot([r["cost"] or 1.0 for r in rows], [r["gain"] or 0.0 for r in rows], style, color=f"C{i}",
                    label=f"{d['domain']}" + (" + RE2" if reread else ""))
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("generation time per question, x greedy")
    ax.set_ylabel("score gain over greedy")
    ax.set_title("Self-consistency votes (1, 5, 9, 15) with and without RE2")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _markdown(facts: dict, plot: Path) -> str:
    n = facts["limit"] or "all"
    lines = ["# RE2 and self-consistency: gain against compute", "",
             f"Written by {written_by(facts)}. Library `{facts['library']}`, base "
             f"`{facts['base_model']}`; {n} examples of each benchmark, each adapter's own settings. The vote "
             "temperature is chosen per domain at 5 votes on validation questions the adapter never trained on. "
             f"Each question has one pool of {facts['pool']} samples per RE2 setting; k votes are the vote over its "
             "first k samples. Latency is timed apart: each vote count samples the first "
             f"{min(facts['latency_timed_on'], facts['limit'] or facts['latency_timed_on'])} questions on its "
             "own (each prompt prefilled once for all its samples). "
             "Intervals: 95% bootstrap; p: paired test against greedy; cost: generation time per question over "
             "greedy's.", ""]
    for d in facts["domains"]:
        tried = ", ".join(f"T={t}: {s:.3f}" for t, s in d["validation_scores"].items())
        lines += [f"## {d['domain']} (`{d['adapter']}`, {d['metric']}; T = {d['temperature']:g}, from {tried})", "",
                  "| decoding | score | gain | p | latency / question | cost |", "|---|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            gain = "" if r["gain"] is None else f"{r['gain']:+.3f}"
            p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
            cost = "" if r["cost"] is None else f"{r['cost']:.1f}x"
            lines.append(f"| {r['decoding']} | {interval(r['score'], r['ci95'])} | {gain} | {p} | "
                         f"{r['latency_seconds'] * 1000:.0f} ms | {cost} |")
        lines.append("")
    lines += [f"![gain against compute]({plot.name})", "", "## The answer", ""]
    for d in facts["domains"]:
        wins = [r for r in d["rows"] if r["p_value"] is not None and r["p_value"] < 0.05 and r["gain"] > 0]
        losses = [r for r in d["rows"] if r["p_value"] is not None and r["p_value"] < 0.05 and r["gain"] < 0]
        cheapest = min(wins, key=lambda r: r["cost"] or 1.0) if wins else None
        lines.append(f"- {d['domain']}: " + (f"the cheapest significant gain is {cheapest['decoding']} "
                                             f"({cheapest['gain']:+.3f} at {cheapest['cost']:.1f}x the time)"
                                             if cheapest else "no configuration beats greedy significantly")
                     + (f"; significantly worse: {', '.join(r['decoding'] for r in losses)}." if losses else "."))
    return "\n".join(lines) + "\n"


def main() -> None:
    locomlx.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters-dir", default=None, help="The library (default: the shipped adapters/).")
    parser.add_argument("--out", default=str(ROOT / "docs" / "research" / "re2-votes"),
                        help="Output path without suffix (.md, .png and .json are written).")
    parser.add_argument("--work", default=str(ROOT / "runs" / "research" / "re2-votes"),
                        help="Where the validation splits are written.")
    parser.add_argument("--limit", type=int, default=None, help="Benchmark examples scored [all].")
    parser.add_argument("--domains", default=None,
                        help="Comma-separated domains of the library [every one with an active adapter].")
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run: votes 1, 2 and 3, one temperature, 6 examples, validation from own data.")
    args = parser.parse_args()
    votes, temperatures, validation = VOTES, TEMPERATURES, VALIDATION
    if args.quick:
        votes, temperatures, validation, args.limit = (1, 2, 3), (0.7,), 6, 6
    domains = comma_list(args.domains)
    facts = run(library_dir(args.adapters_dir), domains, votes, temperatures, args.limit, Path(args.work), validation,
                args.quick)
    facts = with_kept_domains(Path(args.out), facts, study_command(__file__),
                              ("library", "base_model", "limit", "pool", "latency_timed_on"))
    write_study(Path(args.out), facts, lambda plot: _markdown(facts, plot), lambda: _plot(facts))


if __name__ == "__main__":
    main()
