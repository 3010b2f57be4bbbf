"""Generating a whole library's answers on many ranks: jobs cut into shards, shards balanced, answers gathered.

A job is one model (an adapter, or the base) answering the first n examples of one benchmark; it is cut
into shards of one batch (--batch-size examples). The cut never depends on how many ranks run, so each
shard is generated as the same batch whatever the world size, and a sharded run gives the very answers
a one-process run gives. Shards are handed out by expected tokens (longest first, each to the least
loaded rank); a shard some rank already has cached goes to that rank for free. Every rank writes each
shard it finishes to its own cache at once, so a run that loses a rank keeps everything finished, and
rank 0 joins the gathered shards into the ordinary answer cache (eval/run.py), where the evaluation
that follows finds every answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from locomlx.atomic import write_json_atomic
from locomlx.data.records import Example
from locomlx.distributed import World, check_same, gather_objects
from locomlx.engine.engine import Engine
from locomlx.eval.run import (
    Answers,
    InferenceConfig,
    answers_cache_path,
    generate_answers,
    load_benchmark,
    read_answers,
)
from locomlx.provenance import file_sha256
from locomlx.scoring.metrics import choose_metric, get_metric
from locomlx.scoring.sandbox import check_isolation

PROMPT_TOKEN_COST = 0.25  # a prompt token (prefilled in batches) against a generated token (one decode step each)
ANSWER_SLACK_TOKENS = 8  # an answer runs a little past its reference before it stops


@dataclass(frozen=True)
class Job:
    adapter: str | None  # the resident adapter's name; None = the base model
    benchmark: Path
    n_examples: int
    metric: str
    cache: Path

    @property
    def model(self) -> str:
        return self.adapter or "base"


@dataclass(frozen=True)
class Shard:
    job: int  # index into the jobs
    start: int
    stop: int
    cost: float  # expected tokens, generated ones counting 1, prompt ones PROMPT_TOKEN_COST

    def cache(self, jobs: list[Job]) -> Path:
        main = jobs[self.job].cache
        return main.parent / "shards" / f"{main.stem}.{self.start}-{self.stop}.json"


@dataclass
class ShardedAnswers:
    """What the sharded generation did: shards generated and reused, per rank."""
    shards: int
    generated: list[int]
    reused: list[int]


def plan_jobs(engine: Engine, work: list[tuple[str | None, Path, int | None]], inference: InferenceConfig) -> list[Job]:
    """One job per distinct answer cache among `work` (model, benchmark, limit): the base answering a benchmark
    for several adapters is one job, as long as the longest limit asks."""
    jobs: dict[Path, Job] = {}
    for adapter, benchmark, limit in work:
        examples = load_benchmark(benchmark)
        n = min(len(examples), limit or len(examples))
        metric = choose_metric(examples[:n], None)
        if get_metric(metric).runs_code:
            check_isolation()  # refuse now, not after every answer was generated
        cache = answers_cache_path(engine, adapter, file_sha256(benchmark), inference, metric)
        if cache not in jobs or jobs[cache].n_examples < n:
            jobs[cache] = Job(adapter, benchmark, n, metric, cache)
    return list(jobs.values())


def cut_shards(engine: Engine, jobs: list[Job], examples_of: list[list[Example]], size: int,
               max_tokens: int) -> list[Shard]:
    """Every job cut into shards of `size` examples, each costed by its prompts' tokens and its expected
    answers' (the reference's length plus a little, at most max_tokens)."""
    tokenizer = engine.base.tokenizer
    shards = []
    for index, (job, examples) in enumerate(zip(jobs, examples_of)):
        for start in range(0, job.n_examples, size):
            cost = sum(PROMPT_TOKEN_COST * len(tokenizer.encode(ex.instruction + "\n" + ex.input))
                       + min(max_tokens, len(tokenizer.encode(ex.output)) + ANSWER_SLACK_TOKENS)
                       for ex in examples[start:start + size])
            shards.append(Shard(index, start, min(start + size, job.n_examples), cost))
    return shards


def assign_shards(shards: list[Shard], held: list[list[bool]]) -> list[int]:
    """The rank that provides each shard: the first rank holding it cached, else the least loaded one, taking
    the costliest shards first (longest-processing-time-first, within 4/3 of the best balance)."""
    size = len(held)
    owner = [-1] * len(shards)
    load = [0.0] * size
    for i in range(len(shards)):
        holders = [rank for rank in range(size) if held[rank][i]]
        if holders:
            owner[i] = holders[0]
    for i in sorted((i for i in range(len(shards)) if owner[i] < 0), key=lambda i: (-shards[i].cost, i)):
        rank = min(range(size), key=lambda r: (load[r], r))
        owner[i] = rank
        load[rank] += shards[i].cost
    return owner


def _cached(shard: Shard, jobs: list[Job], main: dict[int, Answers | None]) -> Answers | None:
    """The shard's answers from this host's cache: the job's answer cache when it reaches that far, else the
    shard's own file."""
    whole = main[shard.job]
    if whole is not None and len(whole.outputs) >= shard.stop:
        return Answers(whole.outputs[shard.start:shard.stop], whole.tokens_per_second, 0.0,
                       whole.votes[shard.start:shard.stop])
    return read_answers(shard.cache(jobs))


def answer_jobs(engine: Engine, jobs: list[Job], inference: InferenceConfig, world: World,
                on_progress: Callable[[str, int, int], None] | None = None) -> ShardedAnswers:
    """Generate every job's answers across the world's ranks; on rank 0, the jobs' answer caches are complete."""
    examples_of = [load_benchmark(job.benchmark)[:job.n_examples] for job in jobs]
    shards = cut_shards(engine, jobs, examples_of, inference.batch_size, inference.max_tokens)
    check_same(world, "The planned work (adapters, benchmarks, options)",
               [[j.model, str(j.benchmark), j.n_examples, j.cache.name] for j in jobs])
    main = {i: read_answers(job.cache) for i, job in enumerate(jobs)}
    mine_cached = [_cached(s, jobs, main) is not None for s in shards]
    held = gather_objects(world, mine_cached)
    owner = assign_shards(shards, held)
    mine = [i for i, s in enumerate(shards) if owner[i] == world.rank]
    total = sum(shards[i].stop - shards[i].start for i in mine)
    label = f"{world.label}: answers" if world.label else "answers"
    done, generated, reused = 0, 0, 0
    payload = {}
    for i in mine:
        shard = shards[i]
        answers = _cached(shard, jobs, main)
        if answers is None:
            job = jobs[shard.job]
            examples = examples_of[shard.job][shard.start:shard.stop]
            progress = (lambda d, t, before=done - shard.start: on_progress(label, before + d, total)) \
                if on_progress else None  # d counts from shard.start (generate_answers' offset)
            answers = generate_answers(engine, examples, job.adapter, job.metric, inference, progress,
                                       offset=shard.start)
            write_json_atomic(shard.cache(jobs), {"rank": world.rank, **answers.to_record()})
            generated += 1
            done += shard.stop - shard.start
        else:
            reused += 1
            done += shard.stop - shard.start
            if on_progress:
                on_progress(label, done, total)
        payload[str(i)] = answers.to_record()
    everyone = gather_objects(world, {"shards": payload, "generated": generated, "reused": reused})
    if world.is_leader:
        answers_by_shard = {int(i): Answers.from_record(a) for part in everyone for i, a in part["shards"].items()}
        _join(jobs, shards, answers_by_shard, main)
    return ShardedAnswers(len(shards), [p["generated"] for p in everyone], [p["reused"] for p in everyone])


def _join(jobs: list[Job], shards: list[Shard], answers: dict[int, Answers], main: dict[int, Answers | None]) -> None:
    """Write each job's answer cache from its shards, in order, then drop the shard files it replaces."""
    for index, job in enumerate(jobs):
        whole = main[index]
        if whole is not None and len(whole.outputs) >= job.n_examples:
            continue  # already complete: left exactly as it was
        parts = [i for i, s in enumerate(shards) if s.job == index]
        joined = answers[parts[0]]
        for i in parts[1:]:
            joined = joined + answers[i]
        write_json_atomic(job.cache, joined.to_record())
        for i in parts:
            shards[i].cache(jobs).unlink(missing_ok=True)

