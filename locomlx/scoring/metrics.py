"""The metric registry: every metric is one `Metric`, and evaluation, voting, the CLI and the registry read it.

In the style of lm-evaluation-harness's `register_metric`: a metric is a scoring
function registered under its name with what else the rest of locomlx needs to
know about it. Adding a metric is one decorated function (and its test):

    @register_metric("case_sensitive_match", normalises="nothing: the answer must equal the reference")
    def case_sensitive_match(output: str, example: Example) -> Score:
        return Score(float(output.strip() == example.output.strip()), output.strip())

`locomlx eval --metric`, self-consistency voting (`answer_key`), benchmark checks
(`choose_metric`) and `registry validate` then all accept it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from locomlx.data.records import Example
from locomlx.errors import LocomlxError
from locomlx.scoring import text
from locomlx.scoring.sandbox import answer_code, run_tests
from locomlx.scoring.text import Score

ScoreFn = Callable[[str, Example], Score]
KeyFn = Callable[[str, "Example | None"], str]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _normalised_text_key(output: str, example: Example | None) -> str:
    return text.normalise_text(output)


@dataclass(frozen=True)
class Metric:
    """One metric and everything locomlx needs to know about it."""

    name: str
    score: ScoreFn | None  # None: graded by a language model (eval/judge.py), not by a function
    answer_key: KeyFn = _normalised_text_key  # what two sampled answers must share to count as one vote
    requires: dict[str, type] = field(default_factory=dict)  # benchmark fields every row must carry
    aggregate: Callable[[list[float]], float] = mean  # benchmark score from per-example scores
    higher_is_better: bool = True
    normalises: str = ""  # what the comparison ignores, for the metrics table in the docs
    runs_code: bool = False  # scoring runs model-written code: the sandbox must be available before generating


_METRICS: dict[str, Metric] = {}


def define_metric(metric: Metric) -> Metric:
    """Add `metric` to the registry (a name registered twice is a programming error)."""
    if metric.name in _METRICS:
        raise ValueError(f"metric '{metric.name}' is registered twice")
    _METRICS[metric.name] = metric
    return metric


def register_metric(name: str, *, answer_key: KeyFn = _normalised_text_key, requires: dict[str, type] | None = None,
                    aggregate: Callable[[list[float]], float] = mean, higher_is_better: bool = True,
                    normalises: str = "", runs_code: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: register a scoring function `f(output, example) -> Score` as the metric `name`."""
    def decorate(score: ScoreFn) -> ScoreFn:
        define_metric(Metric(name, score, answer_key, dict(requires or {}), aggregate, higher_is_better, normalises,
                             runs_code))
        return score

    return decorate


def unregister_metric(name: str) -> None:
    """Remove a metric (for tests that register a toy one)."""
    _METRICS.pop(name, None)


def metric_names() -> tuple[str, ...]:
    return tuple(_METRICS)


def get_metric(name: str) -> Metric:
    metric = _METRICS.get(name)
    if metric is None:
        raise LocomlxError(f"Unknown metric '{name}' (available: {', '.join(_METRICS)}).")
    return metric


def metrics_markdown() -> str:
    """The metrics table of docs/evaluation.md (tests/test_metric_registry.py keeps the page equal to it)."""
    rows = ["| metric | benchmark rows need | what the comparison ignores or does |", "| --- | --- | --- |"]
    for metric in _METRICS.values():
        needs = ", ".join(f"`{name}` ({kind.__name__})" for name, kind in metric.requires.items()) or "—"
        rows.append(f"| `{metric.name}` | {needs} | {metric.normalises} |")
    return "\n".join(rows)


def choose_metric(examples: list[Example], override: str | None) -> str:
    """The metric a benchmark is scored with: `override`, else the one its rows name (exact_match when none);
    every row must carry the fields that metric needs."""
    named = {ex.extra.get("metric") for ex in examples if ex.extra.get("metric")}
    if override:
        name = override
    elif len(named) > 1:
        raise LocomlxError(f"The benchmark mixes metrics {sorted(named)}; split it or pass --metric.")
    else:
        name = named.pop() if named else "exact_match"
    metric = get_metric(name)
    for needed, kind in metric.requires.items():
        missing = [ex.line for ex in examples if not isinstance(ex.extra.get(needed), kind)]
        if missing:
            raise LocomlxError(f"Metric '{name}' needs a '{needed}' {kind.__name__} on every row; "
                               f"missing on lines {missing[:10]}.")
    return name


def score_answer(name: str, output: str, example: Example) -> Score:
    """Score one answer by a metric that needs no model (all but model-graded ones such as `judge`)."""
    metric = get_metric(name)
    if metric.score is None:
        raise LocomlxError(f"Metric '{name}' is graded by a model; run it through locomlx eval.")
    return metric.score(output, example)


def answer_key(output: str, metric: str = "exact_match", choices: list[str] | None = None,
               reference: str | None = None) -> str:
    """The answer `metric` extracts from `output`, normalised for counting votes; "" when nothing was extracted.

    Votes are counted on what evaluation would score, so a vote never prefers an answer the metric reads
    differently. A reference only decides whether answers compare as numbers or as text (its value is never
    used); without one (chat), the answer's own extracted form decides.
    """
    example = None
    if reference is not None or choices:
        example = Example(0, "", "", reference or "", {"choices": choices} if choices else {})
    return get_metric(metric).answer_key(output, example)


# --- the built-in metrics ---------------------------------------------------------------------------------------


def _exact_match_key(output: str, example: Example | None) -> str:
    form = example.output if example is not None else text.extract_answer(output)
    extracted = text.exact_match(output, form).extracted
    return extracted if text.normalise_number(extracted) == extracted else text.normalise_text(extracted)


@register_metric("exact_match", answer_key=_exact_match_key,
                 normalises="the final answer is extracted (#### N, \\boxed{}, 'the answer is'); numbers compare "
                            "as numbers ($1,234.50 = 1234.5); text is lowercased, punctuation and articles "
                            "(a, an, the) removed, spaces collapsed")
def _exact_match(output: str, example: Example) -> Score:
    return text.exact_match(output, example.output)


def _choice_key(output: str, example: Example | None) -> str:
    choices = example.extra.get("choices") if example is not None else None
    if not choices:
        return text.normalise_text(output)
    return text.choice(output, example.output, choices).extracted


@register_metric("choice", answer_key=_choice_key, requires={"choices": list},
                 normalises="the picked option: a letter (A, B, ...) or exactly one option's text, "
                            "compared lowercased without punctuation")
def _choice(output: str, example: Example) -> Score:
    return text.choice(output, example.output, example.extra["choices"])


def _cased_key(output: str, example: Example | None) -> str:
    return text.extract_answer(output).strip()


@register_metric("exact_match_cased", answer_key=_cased_key,
                 normalises="the final answer is extracted as for exact_match, then must equal the reference's "
                            "exactly: case, punctuation and articles count (surrounding spaces do not)")
def _exact_match_cased(output: str, example: Example) -> Score:
    extracted = text.extract_answer(output).strip()
    return Score(float(extracted == text.extract_answer(example.output).strip()), extracted)


@register_metric("rouge_l", normalises="ROUGE-L F1 over lowercased word tokens (punctuation ignored)")
def _rouge_l(output: str, example: Example) -> Score:
    return text.rouge_l(output, example.output)


def _program_key(output: str, example: Example | None) -> str:
    return " ".join(answer_code("", output).split())


@register_metric("pass@1", answer_key=_program_key, requires={"tests": str}, runs_code=True,
                 normalises="nothing: the answer's code runs against the row's tests in the sandbox")
def _pass_at_1(output: str, example: Example) -> Score:
    result = run_tests(answer_code(example.input, output), example.extra["tests"], setup=example.input)
    return Score(float(result.passed), result.status)


define_metric(Metric("judge", None, normalises="a language model grades 0-10 against the reference "
                                               "(k passes, mean / 10)"))
