"""What every router returns, and the interface a new router implements.

A router scores each *domain* of the adapter library (plus `general` = no specialist)
and names the domain's active adapter; `adapter is None` means "answer with the base model".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

GENERAL = "general"  # the class for questions no specialist covers: the base model answers


@dataclass
class ChainStep:
    """One step of the fallback chain: a candidate domain, its probability, the bar it had to reach, whether it
    answers."""

    domain: str
    adapter: str | None
    probability: float
    threshold: float
    taken: bool

    def text(self) -> str:
        sign = ">=" if self.probability >= self.threshold else "<"
        return f"{self.domain} {self.probability:.2f} {sign} {self.threshold:.2f}"


@dataclass
class RouteDecision:
    adapter: str | None  # adapter to answer with; None = base model
    domain: str  # chosen domain, or GENERAL
    confidence: float  # in [0, 1]
    scores: dict[str, float] = field(default_factory=dict)  # every candidate domain's score
    router: str = ""
    seconds: float = 0.0
    reason: str = ""  # e.g. "below threshold 0.62: base model"
    chain: list[ChainStep] = field(default_factory=list)  # the fallback chain followed (routers that have one)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        who = self.adapter or "none (base model)"
        why = f" · {self.reason}" if self.reason else ""
        return (f"{who} [{self.domain}] confidence {self.confidence:.2f} "
                f"({self.router} router, {self.seconds * 1000:.1f} ms){why}")


class Router(Protocol):
    name: str
    classes: list[str]  # the domains it can pick, GENERAL included

    def route(self, query: str) -> RouteDecision: ...
