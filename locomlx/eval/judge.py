"""The `judge` metric: a language model grades each answer against the reference with a rubric.

The judge is any base model with an optional adapter (by default the model under
evaluation's own base). It grades every answer `k` times with sampling; an
example's score is the mean grade scaled to 0..1, and the spread across the k
passes is reported so a noisy judge is visible.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from locomlx.engine.engine import Engine
from locomlx.scoring.text import Score

RUBRIC = ("You are grading an answer to a question. Compare it with the reference answer. "
          "Give a grade from 0 (wrong or unrelated) to 10 (fully correct and complete). "
          "Reply with the grade as a number first.")
GRADE = re.compile(r"\b(10|[0-9])(?:\s*/\s*10)?\b")


@dataclass
class JudgeSettings:
    k: int = 3
    temperature: float = 0.7
    adapter: str | None = None
    rubric: str = RUBRIC
    seed: int = 0


def judge_prompt(rubric: str, question: str, reference: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": f"{rubric}\n\nQuestion:\n{question}\n\nReference answer:\n{reference}\n\n"
                                        f"Answer to grade:\n{answer}\n\nGrade (0-10):"}]


def parse_grade(text: str) -> float | None:
    match = GRADE.search(text)
    return float(match.group(1)) if match else None


def judge_scores(engine: Engine, questions: list[str], references: list[str], answers: list[str],
                 settings: JudgeSettings = JudgeSettings()) -> tuple[list[Score], list[float]]:
    """Per-example scores (mean grade / 10; an unparseable grade counts as 0) and the benchmark mean of each pass."""
    prompts = [judge_prompt(settings.rubric, q, r, a) for q, r, a in zip(questions, references, answers)]
    passes = []
    for run in range(settings.k):
        texts = engine.generate_batch(prompts, settings.adapter, max_tokens=8, temperature=settings.temperature,
                                      seed=settings.seed + run).texts
        passes.append([parse_grade(t) or 0.0 for t in texts])
    scores = []
    for grades in zip(*passes):
        spread = statistics.pstdev(grades) if len(grades) > 1 else 0.0
        scores.append(Score(statistics.mean(grades) / 10,
                            f"grades {'/'.join(f'{g:g}' for g in grades)} (sd {spread:.1f})"))
    pass_means = [statistics.mean(p) / 10 for p in passes]
    return scores, pass_means
