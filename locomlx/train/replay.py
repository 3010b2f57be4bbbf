"""Replay: keep an adapter close to the base model outside its own task.

An adapter trained only on its task answers every question in that task's format ("positive" to
a yes/no question), which is what the out-of-domain check catches. Replay mixes into training a
sample of *other* tasks' questions whose targets are the base model's own greedy answers, so the
adapter learns "answer like the base" there and "answer like the data" on its task.

Only the inputs of the replay files are used, never their reference answers: the base model's
answers are generated here (batched, greedy) and cached per (base model, max tokens, question),
so adapters that replay the same questions generate them once.

Questions the base answers with nothing are left out. An empty target does not keep the adapter near
the base: it teaches "answer nothing", and where most replay answers are empty (a pretrained base stops
at its first newline on most of other tasks' questions; docs/base-models.md) the adapter learns to
answer nothing outside its task, even where the base answers right.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from locomlx.atomic import write_json_atomic, write_text_atomic
from locomlx.data.checks import leaking_training_rows
from locomlx.data.records import Example, read_examples
from locomlx.errors import LocomlxError
from locomlx.models.resolve import cache_dir
from locomlx.prompt import example_messages

SAMPLE_SEED = 0  # fixed, so every adapter replaying a file gets the same questions (and the cache serves them)


def replay_questions(files: list[str], per_file: int, own: list[Example], benchmarks: list[Path]) -> list[Example]:
    """`per_file` questions drawn from each file (the same ones for every caller), minus any question that
    is also in the adapter's own data or near-duplicates a benchmark question (leakage)."""
    own_inputs = {(e.instruction, e.input) for e in own}
    benchmark_texts = []
    for path in benchmarks:
        examples, _ = read_examples(path)
        benchmark_texts += [e.input or e.instruction for e in examples]
    picked = []
    for file in files:
        examples, problems = read_examples(file)
        if problems:
            raise LocomlxError(f"Replay file {problems[0]} (fix it, or leave the file out of --replay).")
        order = list(range(len(examples)))
        random.Random(SAMPLE_SEED).shuffle(order)
        candidates = [examples[i] for i in order if (examples[i].instruction, examples[i].input) not in own_inputs]
        leaking = leaking_training_rows([e.input or e.instruction for e in candidates], benchmark_texts)
        picked += [e for i, e in enumerate(candidates) if i not in leaking][:per_file]
    return picked


def _cache_path(base, max_tokens: int) -> Path:
    key = json.dumps([base.resolved.reference, base.resolved.source_hash, base.compute_dtype, max_tokens])
    return cache_dir() / "replay" / f"answers-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _question_key(example: Example) -> str:
    return hashlib.sha256(json.dumps([example.instruction, example.input]).encode()).hexdigest()


def base_answers(engine, questions: list[Example], max_tokens: int, on_progress=None) -> list[Example]:
    """The questions with the base model's greedy answers as outputs, verbatim (an answer cut at `max_tokens`
    stays cut: the adapter learns the base's first `max_tokens` tokens there); cached answers are reused."""
    cache = _cache_path(engine.base, max_tokens)
    answers = json.loads(cache.read_text()) if cache.is_file() else {}
    missing = [q for q in questions if _question_key(q) not in answers]
    batch = 16
    for i in range(0, len(missing), batch):
        chunk = missing[i:i + batch]
        generated = engine.generate_batch([example_messages(q.instruction, q.input) for q in chunk], None,
                                          max_tokens, batch)
        answers.update({_question_key(q): text for q, text in zip(chunk, generated.texts)})
        write_json_atomic(cache, answers)
        if on_progress:
            on_progress(min(i + batch, len(missing)), len(missing))
    return [Example(q.line, q.instruction, q.input, answers[_question_key(q)], {"replay": True}) for q in questions]


def answered_only(replayed: list[Example]) -> list[Example]:
    """The replay rows where the base gave an answer, i.e. did not stop at once (see the module docstring)."""
    return [e for e in replayed if e.output]


def replay_file_from(source: Path, questions: Path) -> tuple[Path, int]:
    """An adapter's replay questions as a replay file for another run, and their number. Replay reads
    only the questions (the base answers them); the base's answers are kept where it gave one and
    replaced by "-" where it gave none, so the file passes the data checks."""
    replay = source / "training" / "replay.jsonl"
    rows = [json.loads(line) for line in replay.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if replay.is_file() else []
    write_text_atomic(questions, "".join(json.dumps({**r, "output": r.get("output", "").strip() or "-"},
                                                    ensure_ascii=False) + "\n" for r in rows))
    return questions, len(rows)
