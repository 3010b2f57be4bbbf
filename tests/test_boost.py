"""Inference enhancements without a model: vote counting, tie-breaks, extraction reuse, visible tests, RE2, specs."""

from locomlx.boost.voting import Sample, majority_vote
from locomlx.data.records import Example
from locomlx.engine.compose import composition_name, parse_composition
from locomlx.errors import LocomlxError
from locomlx.eval.run import InferenceConfig
from locomlx.prompt import REREAD, example_messages, render_prompt, user_turn
from locomlx.scoring.doctests import count_passed, visible_tests
from locomlx.scoring.metrics import answer_key, score_answer
from locomlx.scoring.text import normalise_number, normalise_text

import pytest


def _samples(*rows):
    return [Sample(f"text {i}", key, logprob, tests_passed=tests) for i, (key, logprob, tests) in
            enumerate((row + (None,))[:3] for row in rows)]


def test_majority_wins_and_reports_the_split():
    vote = majority_vote(_samples(("42", -1.0), ("41", -0.1), ("42", -2.0), ("42", -0.5), ("7", -0.2)))
    assert vote.winner.key == "42" and vote.split == "3/5 agree"
    assert vote.winner.text == "text 3"  # the winning answer's most probable sample
    assert vote.counts == {"42": 3, "41": 1, "7": 1}


def test_tie_goes_to_the_higher_mean_log_probability():
    # 2 vs 2: "a" has the single most probable sample, but "b" has the higher mean.
    samples = _samples(("a", -0.1), ("b", -0.6), ("a", -2.0), ("b", -0.7))
    vote = majority_vote(samples)
    assert vote.winner.key == "b" and vote.winner.text == "text 1" and vote.split == "2/4 agree"
    assert majority_vote(_samples(("a", -1.0), ("b", -1.0))).winner.key == "a"  # exact tie: the earlier one


def test_nothing_extracted_votes_only_when_no_sample_answered():
    vote = majority_vote(_samples(("", -0.1), ("", -0.1), ("", -0.1), ("B", -3.0)))
    assert vote.winner.key == "B" and vote.split == "1/4 agree" and vote.counts[""] == 3
    assert majority_vote(_samples(("", -0.5), ("", -0.1))).winner.text == "text 1"
    with pytest.raises(ValueError):
        majority_vote([])


def test_code_prefers_the_samples_passing_most_tests():
    # Three samples agree on a program that passes 1 test; two others pass 3: one of those wins.
    samples = _samples(("p", -0.1, 1), ("p", -0.1, 1), ("p", -0.1, 1), ("q", -0.9, 3), ("r", -0.4, 3))
    vote = majority_vote(samples)
    assert vote.winner.key == "r" and vote.split == "1/5 agree"


@pytest.mark.parametrize("metric, outputs, reference, choices, expected", [
    ("exact_match", ["#### 1,234", "so the answer is 1234.", "It is $1234.00 dollars"], "1234", None, "1234"),
    ("exact_match", ["The answer is -3."], "3", None, "-3"),
    ("exact_match", ["\\boxed{1.5}"], "2", None, "1.5"),
    ("exact_match", ["The answer is: The Paris.", "answer: paris"], "Paris", None, "paris"),
    ("choice", ["(b)", "The answer is B.", "I pick banana"], "A", ["apple", "banana", "cherry"], "B"),
])
def test_answer_keys_are_the_harness_extraction(metric, outputs, reference, choices, expected):
    example = Example(1, "q", "", reference, {"choices": choices} if choices else {})
    for output in outputs:
        key = answer_key(output, metric, choices, reference)
        extracted = score_answer(metric, output, example).extracted
        assert key == expected
        assert key == (extracted if normalise_number(extracted) == extracted or metric == "choice"
                       else normalise_text(extracted))


def test_answer_keys_without_a_reference_follow_the_answer():
    assert answer_key("So 6 x 7 = 42, the answer is 42.") == answer_key("#### 42") == "42"
    assert answer_key("Paris!") == answer_key("paris") == "paris"
    fenced, bare = "```python\ndef f():\n    return 1\n```", "def f():\n  return 1"
    assert answer_key(fenced, "pass@1") == answer_key(bare, "pass@1")


PROMPT = '''def add(a: int, b: int) -> int:
    """ Add two numbers.
    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    >>> add(2, 2)
    4
    """
'''


def test_visible_doctests_count_passes_in_the_sandbox():
    assert visible_tests(PROMPT) == [("add(2, 3)", "5"), ("add(-1, 1)", "0"), ("add(2, 2)", "4")]
    shown = visible_tests(PROMPT)
    assert count_passed(PROMPT, "```python\ndef add(a, b):\n    return a + b\n```", shown) == 3
    assert count_passed(PROMPT, "def add(a, b):\n    return a * b if a == b else a + b - 1", shown) == 1
    assert count_passed(PROMPT, "def add(a, b) return", shown) == 0


def test_reread_states_the_question_twice_in_the_one_prompt_format(tiny_model):
    from locomlx.models.load import load_tokenizer_only

    plain = example_messages("Add the numbers.", "2 and 3")
    re2 = example_messages("Add the numbers.", "2 and 3", reread=True)
    question = "Add the numbers.\n\n2 and 3"
    assert plain == [{"role": "user", "content": question}]
    assert re2 == [{"role": "user", "content": f"{question}\nRead the question again: {question}"}]
    assert example_messages("Q?", output="A", reread=True)[1] == {"role": "assistant", "content": "A"}
    assert user_turn("  Why?  ", reread=True)["content"] == f"Why?\n{REREAD}Why?"
    tokenizer = load_tokenizer_only(str(tiny_model))
    assert tokenizer.decode(render_prompt(tokenizer, re2)).count("2 and 3") == 2


def test_composition_specs():
    assert parse_composition("sentiment") is None and parse_composition(None) is None
    assert parse_composition("a+b") == [("a", 0.5), ("b", 0.5)]
    assert parse_composition("a:0.7+b:0.3") == [("a", 0.7), ("b", 0.3)]
    assert parse_composition("a:2") == [("a", 2.0)]
    assert composition_name(parse_composition("a + b")) == "a:0.5+b:0.5"
    for bad, message in (("a+a", "names an adapter twice"), ("a:0.7+b", "weights some adapters but not all"),
                         ("a+", "empty term")):
        with pytest.raises(LocomlxError, match=message):
            parse_composition(bad)


def test_inference_config_names_its_enhancements():
    assert InferenceConfig().decoding == "greedy" and InferenceConfig().enhancements == ""
    voted = InferenceConfig(votes=9, vote_temperature=0.7, reread=True, ensemble=["a", "b"])
    assert voted.decoding == "majority vote of 9 samples (T=0.7) x 2 adapters"
    assert voted.enhancements == "reread+votes9+ensemble"
