"""Scoring one model answer against one reference, per metric.

Each metric returns a `Score`: the value in [0, 1] and what was extracted from
the answer, which evaluation stores per example so failures can be inspected.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    value: float
    extracted: str


_NUMBER = r"[-+]?\$?\s*\d[\d,]*(?:\.\d+)?"
_GSM8K = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+?)(?:\.\s|\.?$|\n)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_ALL_NUMBERS = re.compile(_NUMBER)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_number(text: str) -> str | None:
    """'$1,234.50' -> '1234.5', '42.0 apples' -> '42'; None when there is no number."""
    match = _ALL_NUMBERS.search(text)
    if not match:
        return None
    raw = match.group(0).replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def normalise_text(text: str) -> str:
    """Lowercase, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def extract_answer(text: str) -> str:
    """The final answer in a model's output: `#### N`, `\\boxed{...}`, 'the answer is ...', else the whole text."""
    for pattern in (_GSM8K, _BOXED):
        found = pattern.findall(text)
        if found:
            return found[-1].strip()
    found = _ANSWER_IS.findall(text)
    if found:
        return found[-1].strip()
    return text.strip()


def exact_match(prediction: str, reference: str) -> Score:
    """Numbers compare as numbers (the last one in the answer), text compares normalised."""
    extracted = extract_answer(prediction)
    reference_answer = extract_answer(reference)
    ref_number = (normalise_number(reference_answer)
                  if re.fullmatch(r"\s*" + _NUMBER + r"\s*\.?\s*\w*\s*", reference_answer) else None)
    if ref_number is not None:
        numbers = _ALL_NUMBERS.findall(extracted)
        got = normalise_number(numbers[-1]) if numbers else None
        return Score(float(got == ref_number), got or "")
    return Score(float(normalise_text(extracted) == normalise_text(reference_answer)), extracted)


_LETTER = re.compile(r"(?:^|answer\s*(?:is|:)?\s*|\()\s*([A-Z])(?:[).:\s]|$)", re.IGNORECASE)


_LETTERED = re.compile(r"\s*([A-Z])[.)]\s")  # "B. bookstore", "B) bookstore"


def _reference_letter(reference: str, choices: list[str], letters: str) -> str | None:
    """The keyed option's letter, whether the reference is the letter, the option's text, or both ("B. text")."""
    if reference.strip().upper() in letters:
        return reference.strip().upper()
    lettered = _LETTERED.match(reference)
    if lettered and lettered.group(1) in letters:
        return lettered.group(1)
    matches = [i for i, c in enumerate(choices) if normalise_text(c) == normalise_text(reference)]
    return letters[matches[0]] if matches else None


def choice(prediction: str, reference: str, choices: list[str]) -> Score:
    """Multiple choice: the answer may give the letter (A, B, ...) or the option's text."""
    letters = string.ascii_uppercase[: len(choices)]
    reference_letter = _reference_letter(reference, choices, letters)
    text = prediction.strip()
    picked = None
    letter_match = _LETTER.search(text)
    if letter_match and letter_match.group(1).upper() in letters:
        picked = letter_match.group(1).upper()
    else:
        normalised = normalise_text(text)
        hits = [letters[i] for i, c in enumerate(choices) if normalise_text(c) and normalise_text(c) in normalised]
        if len(hits) == 1:
            picked = hits[0]
    return Score(float(picked is not None and picked == reference_letter), picked or "")


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str, beta: float = 1.0) -> Score:
    """ROUGE-L F-measure over lowercase word tokens (Lin, 2004)."""
    pred = re.findall(r"\w+", prediction.lower())
    ref = re.findall(r"\w+", reference.lower())
    if not pred or not ref:
        return Score(0.0, prediction.strip())
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return Score(0.0, prediction.strip())
    precision, recall = lcs / len(pred), lcs / len(ref)
    f = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
    return Score(f, prediction.strip())
