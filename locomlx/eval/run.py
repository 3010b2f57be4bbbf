"""Run one model (base, or base + adapter) over a benchmark and score every answer.

Answers are greedy and generated in batches; each example's output, extracted
answer and score are kept so failures can be inspected. The base model's answers
are cached by (base model, benchmark hash, inference config), so the base is not
re-run for every adapter evaluated against it; scores are always recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from locomlx.data.checks import check_file
from locomlx.data.records import Example
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.eval import metrics
from locomlx.eval.judge import JudgeSettings, judge_scores
from locomlx.eval.sandbox import program_for, run_python
from locomlx.eval.stats import Interval, bootstrap_ci
from locomlx.models.resolve import cache_dir
from locomlx.prompt import example_messages
from locomlx.provenance import file_sha256

METRICS = ("exact_match", "choice", "rouge_l", "pass@1", "judge")


@dataclass
class InferenceConfig:
    max_tokens: int = 256
    limit: int | None = None
    batch_size: int = 16
    decoding: str = "greedy"


@dataclass
class ExampleResult:
    line: int
    reference: str
    output: str
    extracted: str
    score: float


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

    def to_dict(self) -> dict:
        return asdict(self)


def load_benchmark(path: str | Path) -> list[Example]:
    report = check_file(path, "benchmark", allow_small=True)
    if report.errors:
        raise LocomlxError("The benchmark has problems:\n" + "\n".join(map(str, report.errors[:30])))
    return report.examples


def choose_metric(examples: list[Example], override: str | None) -> str:
    named = {ex.extra.get("metric") for ex in examples if ex.extra.get("metric")}
    if override:
        metric = override
    elif len(named) > 1:
        raise LocomlxError(f"The benchmark mixes metrics {sorted(named)}; split it or pass --metric.")
    else:
        metric = named.pop() if named else "exact_match"
    if metric not in METRICS:
        raise LocomlxError(f"Unknown metric '{metric}' (available: {', '.join(METRICS)}).")
    needs = {"choice": ("choices", list), "pass@1": ("tests", str)}
    if metric in needs:
        field, kind = needs[metric]
        missing = [ex.line for ex in examples if not isinstance(ex.extra.get(field), kind)]
        if missing:
            raise LocomlxError(f"Metric '{metric}' needs a '{field}' {kind.__name__} on every row; "
                               f"missing on lines {missing[:10]}.")
    return metric


def score_answer(metric: str, output: str, example: Example) -> metrics.Score:
    """Score one answer by a metric that needs no model (all but `judge`)."""
    if metric == "exact_match":
        return metrics.exact_match(output, example.output)
    if metric == "choice":
        return metrics.choice(output, example.output, example.extra["choices"])
    if metric == "pass@1":
        result = run_python(program_for(example.input, output, example.extra["tests"]))
        return metrics.Score(float(result.passed), result.status)
    return metrics.rouge_l(output, example.output)


def _base_cache_path(engine: Engine, sha: str, inference: InferenceConfig) -> Path:
    """Where the base model's answers to a benchmark are kept. Answers, not scores, are cached:
    scoring is cheap and re-done every time, so a fixed metric never serves stale scores."""
    base = engine.base.resolved
    key = json.dumps([base.reference, base.source_hash, engine.base.compute_dtype, sha, asdict(inference)])
    return cache_dir() / "eval" / f"base-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _generate(engine: Engine, examples: list[Example], adapter: str | None, inference: InferenceConfig,
              on_progress: Callable[[int, int], None] | None) -> tuple[list[str], float]:
    """Greedy answers in batches; returns them with the generation throughput."""
    outputs: list[str] = []
    tokens, seconds = 0, 0.0
    for i in range(0, len(examples), inference.batch_size):
        chunk = examples[i:i + inference.batch_size]
        batch = engine.generate_batch([example_messages(ex.instruction, ex.input) for ex in chunk], adapter,
                                      inference.max_tokens, inference.batch_size)
        outputs += batch.texts
        tokens += batch.generation_tokens
        seconds += batch.seconds
        if on_progress:
            on_progress(len(outputs), len(examples))
    return outputs, tokens / seconds if seconds else 0.0


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
    sha = file_sha256(benchmark)
    start = time.perf_counter()
    cache = _base_cache_path(engine, sha, inference) if adapter is None else None
    if cache is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        outputs, tokens_per_second = cached["outputs"], cached["generation_tokens_per_second"]
    else:
        outputs, tokens_per_second = _generate(engine, examples, adapter, inference, on_progress)
        if cache is not None:
            write_json_atomic(cache, {"outputs": outputs, "generation_tokens_per_second": tokens_per_second})
    judge_passes = None
    if metric == "judge":
        questions = [example_messages(ex.instruction, ex.input)[0]["content"] for ex in examples]
        scores, judge_passes = judge_scores(engine, questions, [ex.output for ex in examples], outputs, judge)
    else:
        scores = [score_answer(metric, output, ex) for ex, output in zip(examples, outputs)]
    results = [ExampleResult(ex.line, ex.output, output, score.extracted, score.value)
               for ex, output, score in zip(examples, outputs, scores)]
    values = [r.score for r in results]
    run = BenchmarkRun(
        model=adapter or "base", benchmark=str(benchmark), benchmark_sha256=sha, metric=metric,
        score=sum(values) / len(values), ci=bootstrap_ci(values), n_examples=len(values),
        seconds=time.perf_counter() - start,
        generation_tokens_per_second=tokens_per_second,
        inference=inference, examples=results, judge_pass_scores=judge_passes,
    )
    return run


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
