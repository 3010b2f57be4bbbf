"""Shared prompt prefixes: computed once per batch instead of once per row.

The prompts of one benchmark or one batch of questions usually start with the same tokens: the
chat template's system turn and the task's instruction. Prefilling that prefix once and handing
every row a copy of its key/value cache leaves each row only its own tokens to prefill; on a CPU,
where prefill dominates short answers, that is most of an evaluation's time for short inputs.
"""

from __future__ import annotations

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
    cache = make_prompt_cache(model)
    model(mx.array([prompts[0][:shared]]), cache=cache)
    mx.eval([c.state for c in cache])
    return [p[shared:] for p in prompts], [cache] * len(prompts)
