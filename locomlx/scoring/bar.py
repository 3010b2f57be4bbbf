"""The acceptance bar an adapter must clear to pass evaluation and be promoted.

A significant in-domain gain (paired test, p < 0.05, improvement > 0) and no
other benchmark more than 5 points below the base model. Evaluation writes the
verdict with it and promotion checks it, so both read it from here.
"""

from __future__ import annotations

MAX_OOD_DEGRADATION = 0.05
SIGNIFICANCE = 0.05


def is_significant(p_value: float, improvement: float) -> bool:
    return p_value < SIGNIFICANCE and improvement > 0


def within_ood_bar(degradation: float) -> bool:
    """At most 5 points lost on any other benchmark, 5 included. Scores are fractions of examples, so a drop
    from 0.17 to 0.12 is 0.05000000000000002 in floating point: compare at a precision far finer than one
    example instead of letting that last bit fail an adapter."""
    return round(degradation, 9) <= MAX_OOD_DEGRADATION
