#!/usr/bin/env python3
"""Sixteen small procedural skills from reasoning-gym's generators, one domain each, for the scaling library.

Source: procedural generators in the PyPI wheel reasoning-gym==0.1.25 (Apache-2.0), run from the unpacked
wheel without installing the package (scripts/data/sources.py loads only the generator's modules). Never
its `gsm_symbolic` templates: they are rewritten GSM8K test items. Each task's settings are small (short
words, numbers under a few hundred) so a 135M model can learn them from 500 examples.
Processing: the generator's fixed wording becomes the instruction (with "Reply with ... only"), the part
that varies (the numbers, the word, the list, with a word naming the task, so no input reads like another
domain's once `locomlx data check` drops punctuation) is the input, and the answer is recomputed here by an
independent check (math.gcd, int(s, base), sorted(), ...); an item whose generator answer disagrees with
the check is dropped and counted. Duplicate inputs and empty answers are dropped; split by input
(scripts/data/sources.py).

    python scripts/data/reasoning_gym_tasks.py TASK [OUT_DIR]     # default data/TASK
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

from sources import reasoning_gym_module, split_by_group, write_split

SOURCE = "reasoning-gym==0.1.25 {generator} generator (Apache-2.0)"
GENERATED = 3000  # items drawn from each generator before deduplication


@dataclass(frozen=True)
class Task:
    domain: str
    module: str  # under reasoning_gym, e.g. "arithmetic.gcd"
    settings: dict
    instruction: str
    input: Callable[[dict], str]  # the generator's metadata -> the varying part of the question
    answer: Callable[[dict], str]  # metadata -> the answer, recomputed here (not the generator's)
    generator_answer: Callable[[str], str] = field(default=lambda a: a)  # the generator's answer, in our format
    description: str = ""
    keywords: tuple[str, ...] = ()


def _digits(value: int, base: int) -> str:
    out = ""
    while True:
        value, digit = divmod(value, base)
        out = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + out
        if value == 0:
            return out


def _factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % p for p in range(2, math.isqrt(n) + 1))


def _isomorphic(a: str, b: str) -> bool:
    return len(a) == len(b) and len(set(zip(a, b))) == len(set(a)) == len(set(b))


def _kept(x: float, meta: dict) -> bool:
    """Whether number_filtering's operation ("keep_larger", "remove_smaller", ...) keeps x."""
    threshold = float(meta["filter_value"])
    matches = x < threshold if meta["operation"].endswith("smaller") else x > threshold
    return matches if meta["operation"].startswith("keep") else not matches


def _decimal_sum(expression: str) -> str:
    """"4.4 + 1.2 - 7.8" computed exactly, printed as the generator prints it."""
    parts = expression.split()
    total = Decimal(parts[0])
    for sign, number in zip(parts[1::2], parts[2::2]):
        total += Decimal(number) if sign == "+" else -Decimal(number)
    return str(total)


def _numbers(values: list[str]) -> str:
    return ", ".join(values)


def _list_answer(text: str) -> str:
    """"['1', '2']" -> "1, 2"."""
    return ", ".join(part.strip().strip("'\"") for part in text.strip("[] \n").split(",") if part.strip())


TASKS: dict[str, Task] = {t.domain: t for t in (
    Task("letter-count", "algorithmic.letter_counting", {"min_words": 3, "max_words": 6},
         "How many times does the letter appear in the text (any case)? Reply with the number only.",
         lambda m: f'letter "{m["target_letter"]}" in: {" ".join(m["span"])}',
         lambda m: str(" ".join(m["span"]).lower().count(m["target_letter"])),
         description="Counts a letter in a short text", keywords=("letter", "how many times", "appear")),
    Task("word-sort", "algorithmic.word_sorting", {"min_words": 3, "max_words": 5, "max_word_length": 8},
         "Sort the words by ASCII order (capitals before lower case) in the direction given. Reply with the "
         "sorted words only, separated by commas.",
         lambda m: f'{m["direction"]}: {", ".join(m["transformed_words"])}',
         lambda m: ", ".join(sorted(m["transformed_words"], reverse=m["direction"] == "descending")),
         description="Sorts a few words in ASCII order", keywords=("sort", "ascending", "descending", "words")),
    Task("base-convert", "algorithmic.base_conversion", {"max_value": 255},
         "Convert the number from the first base to the second; digits above 9 are lowercase letters. Reply "
         "with the converted number only.",
         lambda m: f'{m["source_repr"] or "0"} from base {m["source_base"]} to base {m["target_base"]}',
         lambda m: _digits(int(m["source_repr"] or "0", m["source_base"]), m["target_base"]),
         description="Converts numbers between bases 2-16", keywords=("base", "convert", "binary", "hexadecimal")),
    Task("gcd", "arithmetic.gcd", {"max_value": 100},
         "Find the greatest common divisor of the numbers. Reply with the number only.",
         lambda m: f'gcd of {" and ".join(map(str, m["numbers"]))}', lambda m: str(math.gcd(*m["numbers"])),
         description="Greatest common divisor of two numbers", keywords=("greatest common divisor", "gcd")),
    Task("lcm", "arithmetic.lcm", {"max_value": 50},
         "Find the least common multiple of the numbers. Reply with the number only.",
         lambda m: f'lcm of {" and ".join(map(str, m["numbers"]))}', lambda m: str(math.lcm(*m["numbers"])),
         description="Least common multiple of two numbers", keywords=("least common multiple", "lcm")),
    Task("spell-backward", "algorithmic.spell_backward", {"max_word_len": 6},
         "Spell the word backward. Reply with the reversed word only.",
         lambda m: f'backward: {m["word"]}', lambda m: m["word"][::-1],
         description="Spells a word backward", keywords=("backward", "reverse", "spell")),
    Task("decimal-sum", "arithmetic.decimal_chain_sum",
         {"min_terms": 2, "max_terms": 2, "max_digits": 1, "max_decimal_places": 1},
         "Add or subtract the decimal numbers. Reply with the result only.",
         lambda m: f'{m["expression"]} =', lambda m: _decimal_sum(m["expression"]),
         description="Sums and differences of one-decimal numbers", keywords=("decimal", "plus", "minus")),
    Task("number-sort", "algorithmic.number_sorting",
         {"min_numbers": 3, "max_numbers": 5, "max_decimals": 0, "min_value": -50.0, "max_value": 50.0},
         "Sort the numbers in the direction given. Reply with the sorted numbers only, separated by commas.",
         lambda m: f'{m["direction"]}: {_numbers(m["original_numbers"])}',
         lambda m: _numbers(sorted(m["original_numbers"], key=float, reverse=m["direction"] == "descending")),
         _list_answer, description="Sorts a few integers", keywords=("sort", "numbers", "ascending", "descending")),
    Task("count-bits", "arithmetic.count_bits", {"max_n": 1023},
         "How many 1 bits does the binary representation of the number have? Reply with the number only.",
         lambda m: f'1 bits in {m["number"]}', lambda m: str(bin(m["number"]).count("1")),
         description="Counts the 1 bits of a number", keywords=("bits", "binary representation", "1 bits")),
    Task("factorize", "arithmetic.prime_factorization", {"max_value": 1000},
         "Factor the number into primes, smallest first, separated by ×. Reply with the factors only.",
         lambda m: f'factor {m["number"]}', lambda m: " × ".join(str(p) for p in _factors(m["number"])),
         description="Prime factorization of numbers up to 1000", keywords=("prime factorization", "factor")),
    Task("reverse-words", "algorithmic.word_sequence_reversal", {"min_words": 3, "max_words": 5},
         "Reverse the order of the words. Reply with the words only, separated by commas.",
         lambda m: ", ".join(m["words"]), lambda m: ", ".join(reversed(m["words"])),
         description="Reverses a list of words", keywords=("reverse", "order", "list of words")),
    Task("multiply", "arithmetic.products", {"max_digits": 2},
         "Multiply the numbers. Reply with the product only.",
         lambda m: m["expression"].replace("*", "times"),
         lambda m: str(math.prod(int(x) for x in m["expression"].split("*"))),
         description="Products of two numbers under 100", keywords=("multiply", "product", "times")),
    Task("count-primes", "algorithmic.count_primes", {"max_n": 200},
         "How many prime numbers lie between the two numbers (both included)? Reply with the number only.",
         lambda m: f'{m["start"]} and {m["end"]}',
         lambda m: str(sum(_is_prime(n) for n in range(m["start"], m["end"] + 1))),
         description="Counts primes in a range under 200", keywords=("prime", "how many prime numbers")),
    Task("number-filter", "algorithmic.number_filtering",
         {"min_numbers": 3, "max_numbers": 5, "max_decimals": 1, "min_value": -50.0, "max_value": 50.0},
         "Filter the list as asked, keeping the order. Reply with the numbers left only, separated by commas.",
         lambda m: f'{m["operation"].replace("_", " ")} than {m["filter_value"]}: {_numbers(m["original_numbers"])}',
         lambda m: _numbers([x for x in m["original_numbers"] if _kept(float(x), m)]),
         _list_answer, description="Keeps or removes numbers above or below a threshold",
         keywords=("keep", "remove", "larger", "smaller", "list")),
    Task("isomorphic", "algorithmic.isomorphic_strings", {"max_string_length": 6},
         "Are the two strings isomorphic (a one-to-one letter mapping turns the first into the second)? Reply "
         "with True or False only.",
         lambda m: " ".join(m["words"]), lambda m: str(_isomorphic(*m["words"])),
         description="Whether two strings are isomorphic", keywords=("isomorphic", "strings", "mapping")),
    Task("ransom-note", "algorithmic.ransom_note", {"max_note_length": 5, "max_magazine_length": 12},
         "Can the ransom note be written with the magazine's letters, each letter used at most once? Reply "
         "with True or False only.",
         lambda m: f'note: {m["ransom_note"]}; magazine: {m["magazine"]}',
         lambda m: str(all(m["magazine"].count(c) >= m["ransom_note"].count(c) for c in set(m["ransom_note"]))),
         description="Whether a note can be built from a magazine's letters", keywords=("ransom note", "magazine")),
)}


def generator(task: Task):
    """The task's (config class, dataset class) from reasoning-gym."""
    module = reasoning_gym_module(task.module)
    config = next(getattr(module, n) for n in dir(module) if n.endswith("Config"))
    dataset = next(getattr(module, n) for n in dir(module) if n.endswith("Dataset") and n != "ProceduralDataset")
    return config, dataset


def rows(domain: str, seed: int = 0) -> tuple[list[dict], int]:
    """Every distinct item of the task's generator (seeded), and how many disagreed with the check."""
    task = TASKS[domain]
    config, dataset = generator(task)
    source = SOURCE.format(generator=task.module.split(".")[-1])
    out, seen, disagreed = [], set(), 0
    for item in dataset(config(**task.settings, seed=seed, size=GENERATED)):
        meta = item["metadata"]
        text, answer = task.input(meta), task.answer(meta)
        if text in seen or not answer:  # empty answers (a filter that removes every number) cannot be trained on
            continue
        seen.add(text)
        if task.generator_answer(item["answer"]).strip() != answer:
            disagreed += 1
            continue
        out.append({"instruction": task.instruction, "input": text, "output": answer, "metric": "exact_match",
                    "source": source, "item": text})
    return out, disagreed


def build(domain: str, seed: int = 0, n_train: int = 500, n_benchmark: int = 300) -> tuple[list[dict], list[dict]]:
    found, _ = rows(domain, seed)
    benchmark, train = split_by_group(found, "item", n_benchmark, n_train, seed)
    return train, benchmark


def review(domain: str, seed: int = 0) -> str:
    """The TRAINING_LOG's review line, from the check's counts."""
    found, disagreed = rows(domain, seed)
    return (f"Every generated item's answer was recomputed by an independent check in "
            f"scripts/data/reasoning_gym_tasks.py: {len(found)} distinct items agreed, {disagreed} disagreed and "
            f"were dropped.")


LIMITATIONS = """Synthetic items in one fixed wording per task, with small numbers and short words: the adapter
learns the format and the small cases, not the skill in general. Answers are scored by exact match."""


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: reasoning_gym_tasks.py TASK [OUT_DIR]; tasks: {', '.join(TASKS)}")
    train, benchmark = build(sys.argv[1])
    write_split(Path(sys.argv[2] if len(sys.argv) > 2 else f"data/{sys.argv[1]}"), train, benchmark)
