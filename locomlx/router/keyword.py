"""The keyword router (v1): the registry's router hints, matched as whole words.

Each active adapter's `router.keywords` are words or phrases, optionally weighted as
`"phrase: 2"`; a domain's score is the sum of the weights of its keywords found in the
query on word boundaries and case-insensitively ("sum" does not match "summarize").
No match at all -> the base model. Confidence = the winner's share of all matched weight.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from locomlx.errors import LocomlxError
from locomlx.registry import Registry, active_adapters
from locomlx.router.decision import GENERAL, RouteDecision


@dataclass(frozen=True)
class Keyword:
    phrase: str
    weight: float
    pattern: re.Pattern


def parse_keyword(spec: str, where: str) -> Keyword:
    """'refund' or 'money back: 2.5' (colon, space, weight) -> Keyword; a phrase's words match across any whitespace."""
    weighted = re.fullmatch(r"(.*):\s+(\d+(?:\.\d+)?)\s*", spec)
    phrase, weight = (weighted.group(1), float(weighted.group(2))) if weighted else (spec, 1.0)
    phrase = phrase.strip()
    if not phrase:
        raise LocomlxError(f"{where}: empty router keyword '{spec}'; "
                           "write a word or phrase, optionally 'phrase: weight'.")
    words = [re.escape(w) for w in phrase.split()]
    return Keyword(phrase.lower(), weight, re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE))


class KeywordRouter:
    name = "keyword"

    def __init__(self, registry: Registry):
        self.adapters = active_adapters(registry)  # domain -> adapter
        self.keywords = {
            domain: [parse_keyword(k, f"registry adapter '{name}' router.keywords")
                     for k in registry.adapters[name].router_keywords]
            for domain, name in self.adapters.items()
        }
        self.classes = sorted(d for d, k in self.keywords.items() if k) + [GENERAL]

    def route(self, query: str) -> RouteDecision:
        start = time.perf_counter()
        scores = {domain: sum(k.weight for k in keywords if k.pattern.search(query))
                  for domain, keywords in self.keywords.items()}
        total = sum(scores.values())
        seconds = time.perf_counter() - start
        if total == 0:
            return RouteDecision(None, GENERAL, 1.0, scores, self.name, seconds, "no keyword matched: base model")
        domain = max(sorted(scores), key=lambda d: scores[d])
        return RouteDecision(self.adapters[domain], domain, scores[domain] / total, scores, self.name, seconds)
