"""`locomlx propose PROPOSAL.md`: the base model's answers to a proposal's example queries, written into it.

An adapter proposal (step 1 of CONTRIBUTING.md, `.github/ISSUE_TEMPLATE/adapter-proposal.md`) must show
where the base model does poorly. This runs the base model, greedy, on the bullets under
"## Example queries" and writes a section with each query and answer at the end of the file (replacing the
section a previous run wrote), so the motivation is the model's own words, not a paraphrase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from locomlx.atomic import write_text_atomic
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.prompt import user_turn

QUERIES_HEADING = "## Example queries"
ANSWERS_HEADING = "## What the base model answers now"
_BULLET = re.compile(r"^\s*[-*]\s+(.*\S)\s*$")


@dataclass
class ProposalAnswers:
    path: Path
    base_model: str
    queries: list[str]
    answers: list[str]


def example_queries(text: str, where: str = "PROPOSAL.md") -> list[str]:
    """The bullets under "## Example queries" (placeholders left out); an error naming the fix when none."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == QUERIES_HEADING)
    except StopIteration:
        raise LocomlxError(f"{where}: no '{QUERIES_HEADING}' section; add it with 3 to 5 queries as '- ...' "
                           "bullets (see .github/ISSUE_TEMPLATE/adapter-proposal.md).") from None
    queries = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        bullet = _BULLET.match(line)
        if bullet and not bullet.group(1).startswith("(fill in"):
            queries.append(bullet.group(1))
    if not queries:
        raise LocomlxError(f"{where}:{start + 1}: '{QUERIES_HEADING}' has no queries yet; write 3 to 5 questions a "
                           "user would ask, one '- ...' bullet each, in place of '(fill in)'.")
    return queries


def _answers_section(base_model: str, queries: list[str], answers: list[str]) -> str:
    parts = [ANSWERS_HEADING, "", f"Written by `loco propose` with the base model `{base_model}` (greedy).", ""]
    for query, answer in zip(queries, answers):
        quoted = "\n".join(f"> {line}" for line in (answer.strip() or "(no answer)").splitlines())
        parts += [f"**Q:** {query}", "", quoted, ""]
    return "\n".join(parts)


def answer_proposal(path: str | Path, base_model: str | None = None, max_tokens: int = 128) -> ProposalAnswers:
    """Run the base model on the proposal's example queries and write its answers into the file."""
    path = Path(path)
    if not path.is_file():
        raise LocomlxError(f"No proposal at {path}; copy .github/ISSUE_TEMPLATE/adapter-proposal.md there and fill "
                           "it in.")
    text = path.read_text(encoding="utf-8")
    queries = example_queries(text, str(path))
    engine = Engine.load(base_model)
    answers = engine.generate_batch([[user_turn(q)] for q in queries], None, max_tokens).texts
    kept = text.split(f"\n{ANSWERS_HEADING}\n")[0].rstrip()
    reference = engine.base.resolved.reference
    write_text_atomic(path, f"{kept}\n\n{_answers_section(reference, queries, answers)}")
    return ProposalAnswers(path, reference, queries, answers)
