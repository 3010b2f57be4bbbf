"""Run one model (base, or base + adapter) over a benchmark and score every answer.

Answers are greedy and generated in batches; each example's output, extracted
answer and score are kept so failures can be inspected. The inference
enhancements (locomlx/boost) are options of the same run: RE2 re-reading,
self-consistency votes, and an ensemble of adapters voting in one mixed batch. Every model's
answers are cached by (base model, adapter weights, benchmark hash, inference config), so the
base is not re-run for every adapter evaluated against it and an adapter's answers are reused by
later runs (the router's evaluation, the swarm experiment); scores are always recomputed.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from locomlx.adapters.format import weights_file
from locomlx.atomic import write_json_atomic
from locomlx.boost.sampling import VoteSettings, sample_candidates, vote_on
from locomlx.data.checks import MIN_BENCHMARK_EXAMPLES, check_file
from locomlx.data.records import Example
from locomlx.engine.batching import DEFAULT_BATCH
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval.judge import JudgeSettings, judge_scores
from locomlx.models.resolve import cache_dir
from locomlx.prompt import example_messages
from locomlx.provenance import file_sha256
from locomlx.scoring.doctests import count_passed, visible_tests
from locomlx.scoring.metrics import choose_metric, get_metric, score_answer
from locomlx.scoring.sandbox import check_isolation
from locomlx.scoring.stats import Interval, bootstrap_ci


@dataclass
class InferenceConfig:
    max_tokens: int = 256
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH
    decoding: str = "greedy"  # set from the fields below: what a reader of results.json needs first
    reread: bool = False  # RE2: the question is stated twice
    votes: int = 1  # self-consistency: samples per adapter, majority vote
    vote_temperature: float = 0.7
    seed: int = 0
    ensemble: list[str] = field(default_factory=list)  # adapters that answer together and vote (empty = off)

    def __post_init__(self):
        voters = f" x {len(self.ensemble)} adapters" if self.ensemble else ""
        if self.votes > 1:
            self.decoding = f"majority vote of {self.votes} samples (T={self.vote_temperature:g}){voters}"
        elif self.ensemble:
            self.decoding = f"majority vote of greedy answers{voters}"
        else:
            self.decoding = "greedy"

    @property
    def enhancements(self) -> str:
        """A short tag of the enhancements in use ("" for plain greedy), e.g. "reread+votes9+ensemble"."""
        tags = ["reread"] * self.reread + [f"votes{self.votes}"] * (self.votes > 1) + ["ensemble"] * bool(self.ensemble)
        return "+".join(tags)


@dataclass
class ExampleResult:
    line: int
    reference: str
    output: str
    extracted: str
    score: float
    vote: str | None = None  # the vote split ("7/9 agree") when answers were voted on


@dataclass
class BenchmarkRun:
    model: str  # "base" or the adapter name
    benchmark: str
    benchmark_sha256: str
    metric: str
    score: float
    ci: Interval
    n_examples: int
    seconds: float
    generation_tokens_per_second: float
    inference: InferenceConfig
    examples: list[ExampleResult] = field(default_factory=list)
    judge_pass_scores: list[float] | None = None  # the benchmark mean of each judge pass (judge metric)
    generation_seconds: float = 0.0  # time spent generating the answers (latency, without scoring)

    def to_dict(self) -> dict:
        return asdict(self)


def load_benchmark(path: str | Path) -> list[Example]:
    """The benchmark's examples, every field checked before anything is generated; a benchmark under the
    contributing rules' minimum is scored, with a warning."""
    report = check_file(path, "benchmark", allow_small=True)
    if report.errors:
        raise LocomlxError("The benchmark has problems:\n" + "\n".join(map(str, report.errors[:30])))
    if len(report.examples) < MIN_BENCHMARK_EXAMPLES:
        warnings.warn(f"{path} has {len(report.examples)} examples; the contributing rules ask for at least "
                      f"{MIN_BENCHMARK_EXAMPLES}, and on fewer the intervals are wide and the verdict weak.",
                      stacklevel=2)
    return report.examples


def answers_cache_path(engine: Engine, adapter: str | None, sha: str, inference: InferenceConfig,
                       metric: str) -> Path | None:
    """Where one model's answers to a benchmark are kept; None when the model has no files to name it by
    (compositions, ensembles). The key is the base model, the adapter's weights and config hashes,
    the benchmark hash and the inference settings except `limit`: the file holds the answers to
    the first N examples, and a run wanting more generates only the rest. Answers, not scores,
    are cached, so a changed metric never serves stale scores; voted answers depend on the metric
    (it extracts what is voted on), so their key includes it."""
    if inference.ensemble:
        return None
    model = ["base"]
    if adapter is not None:
        resident = engine.adapters.get(adapter)
        if resident is None or resident.parts:
            return None
        folder = Path(resident.path)
        model = [file_sha256(weights_file(folder)), file_sha256(folder / "adapter_config.json")]
    base = engine.base.resolved
    settings = {k: v for k, v in asdict(inference).items() if k != "limit"}
    key = json.dumps([base.reference, base.source_hash, engine.base.compute_dtype, *model, sha, settings]
                     + ([metric] if inference.votes > 1 else []))
    return cache_dir() / "eval" / f"answers-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


@dataclass
class Answers:
    """One model's answers to the first len(outputs) examples of a benchmark, as the cache keeps them."""
    outputs: list[str]
    tokens_per_second: float
    seconds: float
    votes: list[str | None]

    def __add__(self, later: "Answers") -> "Answers":
        """These answers followed by those to the next examples."""
        seconds = self.seconds + later.seconds
        tokens = self.tokens_per_second * self.seconds + later.tokens_per_second * later.seconds
        return Answers(self.outputs + later.outputs, tokens / seconds if seconds else 0.0, seconds,
                       self.votes + later.votes)

    def first(self, n: int) -> "Answers":
        """The answers to the first n examples; their time is their share of the whole."""
        share = n / len(self.outputs) if self.outputs else 0.0
        return Answers(self.outputs[:n], self.tokens_per_second, self.seconds * share, self.votes[:n])


    def to_record(self) -> dict:
        """The answers as the cache files keep them (JSON)."""
        return {"outputs": self.outputs, "votes": self.votes, "generation_tokens_per_second": self.tokens_per_second,
                "generation_seconds": self.seconds}

    @classmethod
    def from_record(cls, data: dict) -> "Answers":
        return cls(data["outputs"], data["generation_tokens_per_second"], data["generation_seconds"], data["votes"])


def read_answers(cache: Path | None) -> Answers | None:
    """The cached answers in `cache` (None when there are none)."""
    if cache is None or not cache.is_file():
        return None
    return Answers.from_record(json.loads(cache.read_text()))


def generate_answers(engine: Engine, examples: list[Example], adapter: str | None, metric: str,
                     inference: InferenceConfig, on_progress: Callable[[int, int], None] | None,
                     offset: int = 0) -> Answers:
    """Answers in batches: greedy, or voted on when the inference config asks for votes or an ensemble.

    `offset` is the first example's index in the benchmark: sampling seeds follow it, so answers
    generated in pieces equal those generated at once."""
    voting = inference.votes > 1 or bool(inference.ensemble)
    if not voting:  # one call: the engine keeps its batch full as answers finish (engine/batching.py)
        conversations = [example_messages(ex.instruction, ex.input, reread=inference.reread) for ex in examples]
        progress = (lambda done, total: on_progress(offset + done, offset + total)) if on_progress else None
        batch = engine.generate_batch(conversations, adapter, inference.max_tokens, inference.batch_size,
                                      on_progress=progress)
        return Answers(batch.texts, batch.tokens_per_second, batch.seconds, [None] * len(examples))
    members = inference.ensemble or [adapter]
    outputs: list[str] = []
    splits: list[str | None] = []
    tokens, seconds = 0, 0.0
    for i in range(0, len(examples), inference.batch_size):
        chunk = examples[i:i + inference.batch_size]
        conversations = [example_messages(ex.instruction, ex.input, reread=inference.reread) for ex in chunk]
        settings = VoteSettings(inference.votes, inference.vote_temperature, inference.seed + offset + i)
        candidates, batch = sample_candidates(engine, conversations, members, settings, inference.max_tokens,
                                              inference.batch_size)
        votes = [vote_for_example(metric, ex, group) for ex, group in zip(chunk, candidates)]
        outputs += [v.winner.text for v in votes]
        splits += [v.split for v in votes]
        tokens += batch.generation_tokens
        seconds += batch.seconds
        if on_progress:
            on_progress(offset + len(outputs), offset + len(examples))
    return Answers(outputs, tokens / seconds if seconds else 0.0, seconds, splits)


def vote_for_example(metric: str, example: Example, candidates):
    """The voted answer to one example: keyed by the metric's own extraction; code ranked by its visible tests."""
    shown = visible_tests(example.input) if metric == "pass@1" else []
    return vote_on(candidates,
                   key=lambda text: get_metric(metric).answer_key(text, example),
                   tests_passed=(lambda text: count_passed(example.input, text, shown)) if shown else None)


def run_benchmark(engine: Engine, benchmark: str | Path, adapter: str | None = None, metric: str | None = None,
                  inference: InferenceConfig = InferenceConfig(),
                  on_progress: Callable[[int, int], None] | None = None,
                  judge: JudgeSettings = JudgeSettings()) -> BenchmarkRun:
    """Answer and score every example (or the first `inference.limit`) with `adapter` (None = base)."""
    benchmark = Path(benchmark)
    examples = load_benchmark(benchmark)
    if inference.limit:
        examples = examples[: inference.limit]
    metric = choose_metric(examples, metric)
    if get_metric(metric).runs_code:
        check_isolation()  # refuse now, not after every answer was generated
    sha = file_sha256(benchmark)
    start = time.perf_counter()
    cache = answers_cache_path(engine, adapter, sha, inference, metric)
    cached = read_answers(cache)
    have = len(cached.outputs) if cached else 0
    if have >= len(examples):
        answers = cached.first(len(examples))
    else:
        new = generate_answers(engine, examples[have:], adapter, metric, inference, on_progress, offset=have)
        answers = cached + new if cached else new
        if cache is not None:
            write_json_atomic(cache, answers.to_record())
    return scored_run(engine, benchmark, examples, adapter, metric, answers, inference, start, judge)


def scored_run(engine: Engine, benchmark: Path, examples: list[Example], model: str | None, metric: str,
               answers: Answers, inference: InferenceConfig, started: float,
               judge: JudgeSettings = JudgeSettings()) -> BenchmarkRun:
    """`answers` to the benchmark's first `examples`, scored one by one, with the run's interval; `started` is
    the perf_counter reading the run's wall time counts from. Studies that vote over one pool of samples in
    several ways score each way through here."""
    outputs = answers.outputs
    judge_passes = None
    if get_metric(metric).score is None:  # graded by a language model
        questions = [example_messages(ex.instruction, ex.input)[0]["content"] for ex in examples]
        scores, judge_passes = judge_scores(engine, questions, [ex.output for ex in examples], outputs, judge)
    else:
        scores = [score_answer(metric, output, ex) for ex, output in zip(examples, outputs)]
    results = [ExampleResult(ex.line, ex.output, output, score.extracted, score.value, vote)
               for ex, output, score, vote in zip(examples, outputs, scores, answers.votes)]
    values = [r.score for r in results]
    return BenchmarkRun(
        model=model or "base", benchmark=str(benchmark), benchmark_sha256=file_sha256(benchmark), metric=metric,
        score=get_metric(metric).aggregate(values), ci=bootstrap_ci(values), n_examples=len(values),
        seconds=time.perf_counter() - started,
        generation_tokens_per_second=answers.tokens_per_second,
        inference=inference, examples=results, judge_pass_scores=judge_passes, generation_seconds=answers.seconds,
    )
