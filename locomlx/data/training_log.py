"""TRAINING_LOG.md: the student's account of the data (from TRAINING_LOG_TEMPLATE.md) above the run record
that `locomlx train` writes, and what is still to fill in."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = Path(__file__).with_name("TRAINING_LOG_TEMPLATE.md")
RUN_MARKER = "<!-- locomlx train writes the run record below this line; edit above it only -->"
PLACEHOLDER = "(fill in"


def template_for(name: str) -> str:
    return TEMPLATE.read_text(encoding="utf-8").replace("(fill in: the adapter's name)", name, 1).rstrip()


def student_part(log: str) -> str:
    """Everything above the run record: what training keeps as it is."""
    return log.split(RUN_MARKER)[0].rstrip()


def unfilled_lines(log: str) -> list[int]:
    """Line numbers (from 1) of the student's part of a TRAINING_LOG.md that still hold a placeholder."""
    return [i for i, line in enumerate(student_part(log).splitlines(), start=1) if PLACEHOLDER in line]
