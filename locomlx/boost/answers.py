"""What makes two sampled answers "the same answer": the evaluation harness's own extraction.

Votes are counted on what `locomlx eval` would score, so a vote can never
prefer an answer the metric reads differently: `exact_match` compares the
extracted final answer (numbers as numbers), `choice` the option letter,
`pass@1` the program that would run; free text (`rouge_l`, `judge`) compares
normalised text.
"""

from __future__ import annotations

from locomlx.eval import metrics
from locomlx.eval.sandbox import program_for


def answer_key(text: str, metric: str = "exact_match", choices: list[str] | None = None,
               reference: str | None = None) -> str:
    """The answer `metric` extracts from `text`, normalised for counting; "" when nothing was extracted.

    As in scoring, a reference only decides whether answers compare as numbers or as text (its value is
    never used); without one (chat), the answer's own extracted form decides.
    """
    if metric == "choice" and choices:
        return metrics.choice(text, reference or "", choices).extracted
    if metric == "pass@1":
        return " ".join(program_for("", text, "").split())
    if metric == "exact_match":
        form = reference if reference is not None else metrics.extract_answer(text)
        extracted = metrics.exact_match(text, form).extracted
        return extracted if metrics.normalise_number(extracted) == extracted else metrics.normalise_text(extracted)
    return metrics.normalise_text(text)
