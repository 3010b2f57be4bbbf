"""Self-consistency: many answers to one question, one winner by majority.

Pure counting, no model: each `Sample` already carries its answer key (what the
evaluation harness extracts from it, boost/answers.py), its mean token
log-probability and, for code, how many visible tests it passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    text: str
    key: str  # the extracted answer; samples with equal keys vote together ("" = nothing extracted)
    mean_logprob: float
    adapter: str | None = None
    tests_passed: int | None = None  # code: visible tests this sample passes (None = no tests)


@dataclass(frozen=True)
class Vote:
    winner: Sample
    agree: int  # samples that gave the winning answer
    total: int
    counts: dict[str, int] = field(default_factory=dict)  # answer key -> samples, most votes first

    @property
    def split(self) -> str:
        return f"{self.agree}/{self.total} agree"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def majority_vote(samples: list[Sample]) -> Vote:
    """The most frequent answer; ties go to the answer whose samples have the higher mean token log-probability.

    Samples from which nothing was extracted vote only if no sample gave an answer. When samples carry test
    counts, only those passing the most tests take part (code: prefer the sample passing most tests). The
    winning answer is represented by its most probable sample; any remaining tie goes to the earliest sample.
    """
    if not samples:
        raise ValueError("majority_vote needs at least one sample")
    candidates = [s for s in samples if s.key] or list(samples)
    counted = [s.tests_passed for s in candidates if s.tests_passed is not None]
    if counted:
        best = max(counted)
        candidates = [s for s in candidates if (s.tests_passed or 0) == best]
    groups: dict[str, list[Sample]] = {}
    for sample in candidates:
        groups.setdefault(sample.key, []).append(sample)
    winner_key = max(groups, key=lambda k: (len(groups[k]), _mean([s.mean_logprob for s in groups[k]])))
    members = groups[winner_key]
    winner = max(members, key=lambda s: s.mean_logprob)  # max keeps the first of equals
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.key] = counts.get(sample.key, 0) + 1
    ordered = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return Vote(winner, counts[winner_key], len(samples), ordered)
