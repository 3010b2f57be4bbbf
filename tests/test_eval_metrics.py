"""Metrics and statistics with known answers."""

from locomlx.scoring.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_p, paired_p_value
from locomlx.scoring.text import choice, exact_match, extract_answer, normalise_number, rouge_l

import numpy as np
import pytest


@pytest.mark.parametrize("output,expected", [
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("so the total is \\boxed{3/4}", "3/4"),
    ("Let me think. The answer is Paris.", "Paris"),
    ("The answer is: 12 apples", "12 apples"),
    ("just text", "just text"),
])
def test_extract_answer(output, expected):
    assert extract_answer(output) == expected


@pytest.mark.parametrize("text,number", [
    ("$1,234.50", "1234.5"), ("42.0 apples", "42"), ("-7", "-7"), ("no digits", None), ("1,000,000", "1000000"),
])
def test_normalise_number(text, number):
    assert normalise_number(text) == number


@pytest.mark.parametrize("prediction,reference,value,extracted", [
    ("She has 5 + 3 = 8 apples.\n#### 8", "#### 8", 1.0, "8"),
    ("The answer is $1,200.", "1200", 1.0, "1200"),
    ("I think it is 17 or maybe 18", "18", 1.0, "18"),          # the final number counts
    ("The answer is 18.0", "18", 1.0, "18"),
    ("The answer is 19", "18", 0.0, "19"),
    ("The Eiffel Tower!", "eiffel tower", 1.0, "The Eiffel Tower!"),
    ("Paris, France", "Paris", 0.0, "Paris, France"),
])
def test_exact_match(prediction, reference, value, extracted):
    score = exact_match(prediction, reference)
    assert score.value == value and score.extracted == extracted


@pytest.mark.parametrize("prediction,reference,value,picked", [
    ("B", "B", 1.0, "B"),
    ("The answer is (c).", "C", 1.0, "C"),
    ("B) a mammal", "B", 1.0, "B"),
    ("It is a mammal.", "B", 1.0, "B"),          # option text
    ("A reptile", "a mammal", 0.0, "A"),           # the letter A, not the reference option
    ("mammal or reptile", "B", 0.0, ""),           # ambiguous: two options named
    ("B. a mammal", "B. a mammal", 1.0, "B"),     # reference with letter and text (CommonsenseQA's style)
    ("C. a bird", "B) a mammal", 0.0, "C"),
    ("A reptile", "a reptile", 1.0, "A"),          # "A " without "." or ")" is text, not a lettered reference
])
def test_choice(prediction, reference, value, picked):
    score = choice(prediction, reference, ["a reptile", "a mammal", "a bird"])
    assert score.value == value and score.extracted == picked


def test_rouge_l_published_values():
    """Lin (2004), ROUGE, section 3.1: reference 'police killed the gunman'."""
    reference = "police killed the gunman"
    assert rouge_l("police kill the gunman", reference).value == pytest.approx(0.75)
    assert rouge_l("the gunman kill police", reference).value == pytest.approx(0.5)
    assert rouge_l("the gunman police killed", reference).value == pytest.approx(0.5)
    assert rouge_l("", reference).value == 0.0
    assert rouge_l("Police killed the gunman.", reference).value == pytest.approx(1.0)


def test_rouge_l_unequal_lengths():
    # LCS("the cat sat", "the cat sat on the mat") = 3: P = 1, R = 0.5, F1 = 2/3
    assert rouge_l("the cat sat", "the cat sat on the mat").value == pytest.approx(2 / 3)


def test_mcnemar_known_values():
    # 10 discordant pairs all favouring a: p = 2 * 0.5**10
    a = [1] * 10 + [1] * 5 + [0] * 5
    b = [0] * 10 + [1] * 5 + [0] * 5
    assert mcnemar_exact(a, b) == pytest.approx(2 / 1024)
    assert mcnemar_exact(b, a) == pytest.approx(2 / 1024)
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0
    # 6 vs 4 discordant: two-sided binomial p = 2 * P(X <= 4 | n=10) = 0.7539
    a = [1] * 6 + [0] * 4
    b = [0] * 6 + [1] * 4
    assert mcnemar_exact(a, b) == pytest.approx(0.75390625)


def test_bootstrap_ci_and_paired_p():
    rng = np.random.default_rng(1)
    scores = rng.random(400)
    interval = bootstrap_ci(scores)
    assert interval.low < scores.mean() < interval.high
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * scores.std() / 20, rel=0.15)
    better = scores + 0.2
    assert paired_bootstrap_p(better, scores) < 0.01
    assert paired_bootstrap_p(scores + rng.normal(0, 0.01, 400), scores) > 0.05
    assert paired_p_value([1, 0, 1, 1], [0, 0, 1, 0]) == mcnemar_exact([1, 0, 1, 1], [0, 0, 1, 0])
