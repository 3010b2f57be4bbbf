"""The queries a router learns from and is judged on, drawn from the adapter library.

Domain queries are the user turns (instruction + input, exactly as chat would send them) of
each registered adapter's training data (for training; the input alone is added too) or
benchmark (held out); a domain without an active adapter counts as `general`. The `general`
class — questions no specialist covers — comes from `router/general.jsonl` in the library
(built by scripts/data/general_queries.py), whose rows carry a `split` of train or heldout.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from locomlx.data.records import read_examples
from locomlx.errors import LocomlxError
from locomlx.prompt import example_messages
from locomlx.registry import Registry, active_adapters
from locomlx.router.decision import GENERAL

SPLITS = ("train", "heldout")
SHIFTED_SPLITS = ("feedback", "test")


@dataclass(frozen=True)
class Query:
    text: str
    domain: str
    source: str  # file:line it came from


def general_queries_path(library: Path) -> Path:
    return library / "router" / "general.jsonl"


def _general(library: Path, split: str) -> list[Query]:
    path = general_queries_path(library)
    if not path.is_file():
        raise LocomlxError(f"No general (no-specialist) queries at {path}; build them with "
                           "`python scripts/data/general_queries.py` so the router can learn "
                           "when to use the base model.")
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            text, row_split = row["query"], row["split"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LocomlxError(f"{path}:{number}: expected "
                               f"{{\"query\": ..., \"split\": \"train\"|\"heldout\"}} ({exc}).") from exc
        if row_split == split:
            queries.append(Query(text, GENERAL, f"{path}:{number}"))
    return queries


def _domain_queries(registry: Registry, library: Path, split: str) -> list[Query]:
    """Each installed adapter's queries, labelled with its domain; a domain without an active adapter
    has no specialist to route to, so its queries belong to `general` (the base model answers).
    Training uses the active adapters' data only, so an inactive adapter never changes a trained router
    (registry_hash); held-out queries come from every installed adapter's benchmark."""
    served = set(active_adapters(registry))
    queries = []
    for entry in registry.adapters.values():
        if not entry.installed or (split == "train" and not entry.active):
            continue
        relative = "training/dataset.jsonl" if split == "train" else "eval/benchmark.jsonl"
        path = library / entry.path / relative
        examples, _ = read_examples(path)
        if not examples:
            raise LocomlxError(f"Adapter '{entry.name}' has no usable examples at {path}; the router needs its "
                               f"{'training data' if split == 'train' else 'benchmark'}.")
        label = entry.domain if entry.domain in served else GENERAL
        for ex in examples:
            where = f"{path}:{ex.line}"
            queries.append(Query(example_messages(ex.instruction, ex.input)[0]["content"], label, where))
            if split == "train" and ex.input.strip():
                # Users also paste the text alone, without the task's instruction.
                queries.append(Query(ex.input.strip(), label, where))
    return queries


def routing_queries(registry: Registry, library: Path, split: str, per_domain: int | None = None,
                    seed: int = 0) -> list[Query]:
    """Queries of every domain and of `general` for `split`, at most `per_domain` each (seeded sample)."""
    if split not in SPLITS:
        raise ValueError(split)
    by_domain: dict[str, list[Query]] = {}
    seen = set()  # adapters of one domain often share data (e.g. the same benchmark)
    for query in _domain_queries(registry, library, split) + _general(library, split):
        if query.text not in seen:
            seen.add(query.text)
            by_domain.setdefault(query.domain, []).append(query)
    rng = random.Random(seed)
    picked = []
    for domain in sorted(by_domain):
        items = by_domain[domain]
        if per_domain is not None and len(items) > per_domain:
            items = rng.sample(items, per_domain)
        picked += items
    return picked


def shifted_queries_path(library: Path) -> Path:
    return library / "router" / "shifted.jsonl"


def shifted_queries(registry: Registry, library: Path, split: str = "test") -> list[Query]:
    """The shifted routing set (router/shifted.jsonl, built by scripts/data/shifted_routing.py): queries from
    sources no adapter trained on, phrased as students write. `feedback` rows feed simulated feedback, `test`
    rows judge; a domain without an active adapter counts as general. Empty when the library has no such file."""
    if split not in SHIFTED_SPLITS:
        raise ValueError(split)
    path = shifted_queries_path(library)
    if not path.is_file():
        return []
    served = set(active_adapters(registry))
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            text, domain, row_split = row["query"], row["domain"], row["split"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LocomlxError(f"{path}:{number}: expected {{\"query\": ..., \"domain\": ..., \"split\": "
                               f"\"feedback\"|\"test\"}} ({exc}).") from exc
        if row_split == split:
            queries.append(Query(text, domain if domain in served else GENERAL, f"{path}:{number}"))
    return queries
