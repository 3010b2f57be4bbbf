"""Dataset checks beyond single lines: duplicates, sizes, lengths, and train/benchmark leakage.

Leakage compares the part of an example that varies: its `input` when it has
one, else its `instruction` (a shared instruction such as "Classify the
sentiment" would otherwise make every pair look alike). Two texts match when
their normalised forms are equal, or, for texts of 12+ words, when at least
half of the benchmark text's word 8-grams occur in the training set.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from locomlx.data.records import Example, Problem, read_examples

MIN_TRAIN_EXAMPLES = 500
MIN_BENCHMARK_EXAMPLES = 50
NGRAM = 8
NGRAM_MIN_WORDS = 12
NGRAM_LEAK_SHARE = 0.5

_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


def varying_text(example: Example) -> str:
    return example.input if example.input.strip() else example.instruction


def duplicate_problems(examples: list[Example], path: str) -> list[Problem]:
    problems = []
    exact: dict[tuple, int] = {}
    near: dict[str, int] = {}
    for ex in examples:
        key = (ex.instruction, ex.input, ex.output)
        if key in exact:
            problems.append(Problem(path, ex.line, f"exact duplicate of line {exact[key]}; remove one of them"))
            continue
        exact[key] = ex.line
        norm = normalise(f"{ex.instruction} {ex.input} {ex.output}")
        if norm in near:
            problems.append(Problem(path, ex.line, f"near-duplicate of line {near[norm]} (same text up to case, "
                                                    "spacing and punctuation)", severity="warning"))
        else:
            near[norm] = ex.line
    return problems


def size_problems(examples: list[Example], path: str, kind: str, allow_small: bool) -> list[Problem]:
    minimum = MIN_TRAIN_EXAMPLES if kind == "train" else MIN_BENCHMARK_EXAMPLES
    if len(examples) >= minimum:
        return []
    severity = "warning" if allow_small else "error"
    fix = "" if allow_small else " (or pass --allow-small for an experiment)"
    return [Problem(path, None, f"{len(examples)} usable {kind} examples; the contributing rules ask for at least "
                                f"{minimum}{fix}", severity=severity)]


def length_problems(examples: list[Example], path: str, token_counts: list[int], max_seq_length: int,
                    policy: str) -> list[Problem]:
    """One warning naming how many (and which) examples exceed max_seq_length and what happens to them."""
    long_lines = [ex.line for ex, n in zip(examples, token_counts) if n > max_seq_length]
    if not long_lines:
        return []
    shown = ", ".join(map(str, long_lines[:10])) + (" ..." if len(long_lines) > 10 else "")
    action = "truncated to" if policy == "truncate" else "dropped for exceeding"
    return [Problem(path, None, f"{len(long_lines)} examples are longer than --max-seq-length {max_seq_length} tokens "
                                f"and will be {action} it (lines {shown})", severity="warning")]


def _ngrams(words: list[str]) -> set[int]:
    return {hash(tuple(words[i:i + NGRAM])) for i in range(len(words) - NGRAM + 1)}


@dataclass
class _TrainIndex:
    exact: dict[str, int]
    ngrams: set[int]


def _index(train: list[Example]) -> _TrainIndex:
    exact, grams = {}, set()
    for ex in train:
        norm = normalise(varying_text(ex))
        exact.setdefault(norm, ex.line)
        grams |= _ngrams(norm.split())
    return _TrainIndex(exact, grams)


def leaking_training_rows(train_texts: list[str], benchmark_texts: list[str]) -> set[int]:
    """Indices of training texts to drop so that `leakage_problems` finds nothing: every training text
    equal (normalised) to a benchmark text, or sharing an 8-word sequence with a benchmark text
    that `leakage_problems` would flag. Data builders use it to de-duplicate across a split."""
    owners: dict[int, set[int]] = {}
    exact: dict[str, set[int]] = {}
    for i, text in enumerate(train_texts):
        norm = normalise(text)
        exact.setdefault(norm, set()).add(i)
        for gram in _ngrams(norm.split()):
            owners.setdefault(gram, set()).add(i)
    drop: set[int] = set()
    for text in benchmark_texts:
        norm = normalise(text)
        drop |= exact.get(norm, set())
        words = norm.split()
        if len(words) >= NGRAM_MIN_WORDS:
            grams = _ngrams(words)
            shared = [g for g in grams if g in owners]
            if len(shared) / len(grams) >= NGRAM_LEAK_SHARE:
                for gram in shared:
                    drop |= owners[gram]
    return drop


def leakage_problems(train: list[Example], train_path: str, benchmarks: dict[str, list[Example]]) -> list[Problem]:
    """Errors for benchmark examples that also appear (exactly, normalised, or by 8-gram overlap) in training data."""
    index = _index(train)
    problems = []
    for bench_path, bench in benchmarks.items():
        for ex in bench:
            norm = normalise(varying_text(ex))
            if norm in index.exact:
                problems.append(Problem(train_path, index.exact[norm],
                                        f"same text as benchmark {bench_path}:{ex.line}; remove it from the training set"))
                continue
            words = norm.split()
            if len(words) >= NGRAM_MIN_WORDS:
                grams = _ngrams(words)
                share = len(grams & index.ngrams) / len(grams)
                if share >= NGRAM_LEAK_SHARE:
                    problems.append(Problem(train_path, None,
                                            f"{share:.0%} of the 8-word sequences of benchmark {bench_path}:{ex.line} occur "
                                            "in the training set; remove the overlapping training examples"))
    return problems


def library_benchmarks(library: Path) -> list[Path]:
    """Benchmarks of every adapter in the library (`*/eval/benchmark.jsonl`)."""
    return sorted(library.glob("*/eval/benchmark.jsonl")) if library.is_dir() else []


@dataclass
class CheckReport:
    path: str
    kind: str
    examples: list[Example]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def check_file(path: str | Path, kind: str = "train", allow_small: bool = False, benchmarks: list[Path] = (),
               token_counter=None, max_seq_length: int = 1024, long_policy: str = "truncate") -> CheckReport:
    """All checks for one training or benchmark file.

    `token_counter(examples) -> list[int]` enables the length check (it needs the base model's tokenizer).
    For a training file, `benchmarks` are checked for leakage.
    """
    if kind not in ("train", "benchmark"):
        raise ValueError(f"kind must be 'train' or 'benchmark', not {kind!r}")
    path = str(path)
    examples, problems = read_examples(path)
    problems += duplicate_problems(examples, path)
    problems += size_problems(examples, path, kind, allow_small)
    if token_counter is not None and examples:
        problems += length_problems(examples, path, token_counter(examples), max_seq_length, long_policy)
    if kind == "train":
        loaded = {}
        for bench in benchmarks:
            bench_examples, bench_problems = read_examples(bench)
            problems += [p for p in bench_problems if p.severity == "error"]
            loaded[str(bench)] = bench_examples
        problems += leakage_problems(examples, path, loaded)
    return CheckReport(path, kind, examples, problems)
