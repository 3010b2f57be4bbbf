"""Many answers per question in one batched call: `votes` samples from each adapter of an ensemble.

Every (question, adapter, sample) becomes one row of a single mixed-adapter batch
(engine/mixed.py), sampled at the vote temperature from one seed, each with its
mean token log-probability for breaking ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from locomlx.boost.voting import Sample, Vote, majority_vote
from locomlx.engine.engine import BatchGeneration, Engine, Generation, peak_memory_mb
from locomlx.errors import LocomlxError
from locomlx.scoring.metrics import answer_key


@dataclass
class VoteSettings:
    votes: int = 1  # samples per adapter; 1 = one greedy answer each
    temperature: float = 0.7  # sampling temperature when votes > 1
    seed: int = 0


@dataclass(frozen=True)
class Candidate:
    text: str
    adapter: str | None
    mean_logprob: float


def sample_candidates(engine: Engine, conversations: list[list[dict]], members: list[str | None],
                      settings: VoteSettings, max_tokens: int, batch_size: int
                      ) -> tuple[list[list[Candidate]], BatchGeneration]:
    """For each conversation, `settings.votes` answers from each member (None = base), in one batched call."""
    if settings.votes < 1:
        raise LocomlxError("--votes must be at least 1.")
    if settings.votes > 1 and settings.temperature <= 0:
        raise LocomlxError("--votes above 1 needs a --vote-temperature above 0: greedy samples are all the same.")
    jobs = [(conversation, member) for conversation in conversations for member in members
            for _ in range(settings.votes)]
    temperature = settings.temperature if settings.votes > 1 else 0.0
    batch = engine.generate_batch([c for c, _ in jobs], adapters=[m for _, m in jobs], max_tokens=max_tokens,
                                  batch_size=batch_size, temperature=temperature, seed=settings.seed, logprobs=True)
    per = len(members) * settings.votes
    rows = [Candidate(text, adapter, logprob)
            for text, adapter, logprob in zip(batch.texts, batch.adapters, batch.mean_logprobs)]
    return [rows[i:i + per] for i in range(0, len(rows), per)], batch


def vote_on(candidates: list[Candidate], key: Callable[[str], str],
            tests_passed: Callable[[str], int] | None = None) -> Vote:
    """The majority answer among `candidates`, keyed by `key(text)`; with `tests_passed`, code samples are
    ranked by the tests they pass first (each distinct text is run once)."""
    passed: dict[str, int] = {}
    if tests_passed:
        for c in candidates:
            if c.text not in passed:
                passed[c.text] = tests_passed(c.text)
    return majority_vote([Sample(c.text, key(c.text), c.mean_logprob, c.adapter, passed.get(c.text))
                          for c in candidates])


def answer_by_vote(engine: Engine, messages: list[dict], members: list[str | None], settings: VoteSettings,
                   max_tokens: int, key: Callable[[str], str] = answer_key) -> tuple[Generation, Vote]:
    """One conversation answered by vote (chat): the winning sample as a Generation, and the vote."""
    candidates, batch = sample_candidates(engine, [messages], members, settings, max_tokens,
                                          batch_size=len(members) * settings.votes)
    vote = vote_on(candidates[0], key)
    generation = Generation(text=vote.winner.text, adapter=vote.winner.adapter, prompt_tokens=batch.prompt_tokens,
                            generation_tokens=batch.generation_tokens, prompt_tps=0.0,
                            generation_tps=batch.tokens_per_second, finish_reason=None,
                            truncated=bool(batch.truncated), switch_seconds=0.0, peak_memory_mb=peak_memory_mb())
    return generation, vote
