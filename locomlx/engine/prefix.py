"""Shared prompt prefixes: computed once per batch instead of once per row.

The prompts of one benchmark or one batch of questions usually start with the same tokens: the
chat template's system turn and the task's instruction. Prefilling that prefix once and handing
every row a copy of its key/value cache leaves each row only its own tokens to prefill; on a CPU,
where prefill dominates short answers, that is most of an evaluation's time for short inputs.

Self-consistency goes further: its rows are many samples of one prompt, so each distinct prompt is
prefilled once, whole, and its samples start from its cache (`scripts/bench_votes.py` measures it); in an
ensemble's mixed-adapter batch, once per member.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

MIN_SHARED_TOKENS = 8  # below this the extra forward pass costs about what it saves


def common_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading tokens every prompt shares."""
    first, n = prompts[0], min(len(p) for p in prompts)
    for prompt in prompts[1:]:
        i = 0
        while i < n and prompt[i] == first[i]:
            i += 1
        n = i
    return n


def prefill_shared_prefix(model, prompts: list[list[int]]) -> tuple[list[list[int]], list[list] | None]:
    """(the prompts without their shared prefix, one prompt cache per row holding it), or (prompts, None)
    when they share too little. Every row keeps at least its last token: generation starts from it.
    The rows' caches are one object: mlx-lm's batch generation copies caches when it merges them."""
    if len(prompts) < 2:
        return prompts, None
    shared = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
    if shared < MIN_SHARED_TOKENS:
        return prompts, None
    cache = _prefilled(model, prompts[0][:shared])
    return [p[shared:] for p in prompts], [cache] * len(prompts)


def prefill_prompts(model, prompts: list[list[int]], adapters: list[str | None] | None = None,
                    fresh_cache: Callable[[int], list] | None = None) -> tuple[list[list[int]], list[list] | None]:
    """(what each row has left to prefill, its starting cache): rows given the same prompt (and, in a
    mixed-adapter batch, the same `adapters` entry) share one prefill of it up to its last token. Without
    `adapters` the other rows share their common prefix (`prefill_shared_prefix`); in a mixed batch they start
    from `fresh_cache(row)`, which also makes the cache a shared prefill starts from (its row's adapter entry
    included). The caches held at once are one per distinct repeated prompt, so callers that repeat prompts
    pass them a batch at a time (boost/sampling.py's callers do)."""
    fresh_cache = fresh_cache or (lambda row: make_prompt_cache(model))
    rows_of: dict[tuple, list[int]] = {}
    for i, prompt in enumerate(prompts):
        rows_of.setdefault((tuple(prompt), adapters[i] if adapters else None), []).append(i)
    repeated = [(prompt, rows) for (prompt, _), rows in rows_of.items()
                if len(rows) > 1 and len(prompt) > MIN_SHARED_TOKENS]
    if not repeated and adapters is None:
        return prefill_shared_prefix(model, prompts)
    rest: list[list[int]] = list(prompts)
    caches: list[list | None] = [None] * len(prompts)
    for prompt, rows in repeated:
        cache = _prefilled(model, list(prompt[:-1]), fresh_cache(rows[0]))
        for i in rows:
            rest[i], caches[i] = list(prompt[-1:]), cache
    singles = [i for i, cache in enumerate(caches) if cache is None]
    if adapters is not None:
        for i in singles:
            caches[i] = fresh_cache(i)
    elif len(singles) > 1:
        suffixes, shared = prefill_shared_prefix(model, [prompts[i] for i in singles])
        for i, suffix, cache in zip(singles, suffixes, shared or [None] * len(singles)):
            rest[i], caches[i] = suffix, cache
    return rest, caches


def _prefilled(model, tokens: list[int], cache: list | None = None) -> list:
    """`cache` (default: a fresh prompt cache) holding `tokens`' keys and values."""
    cache = cache if cache is not None else make_prompt_cache(model)
    model(mx.array([tokens]), cache=cache)
    mx.eval([c.state for c in cache])
    return cache
