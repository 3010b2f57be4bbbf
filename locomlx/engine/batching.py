"""Continuous batching over a whole list of prompts, shortest first.

mlx-lm's `BatchGenerator` keeps up to `batch_size` rows decoding and starts the next prompt as soon as
a row finishes, so a long answer never leaves the rest of its batch idle. Feeding it the prompts
sorted by length puts prompts of similar length in the same prefill, with little padding. The answers
are the same as in fixed batches (tests/test_engine.py); `scripts/bench_eval.py` measures the speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the CLI reads DEFAULT_BATCH for its --help without loading MLX
    import mlx.core as mx

# Rows decoded together. On a CPU a decode step's time grows much slower than its row count (its matmuls get
# wider, the same weights are read once), so wide batches suit long answers (`scripts/bench_eval.py --batch-size N`
# measures the throughput).
DEFAULT_BATCH = 48
# Prompts prefilled together, at most: prompts of different lengths are padded to the longest, and with
# 48 at a time classification benchmarks (long prompts, answers of a few tokens) evaluate slower than with 16.
PREFILL_BATCH = 16


@dataclass
class Rows:
    """Per prompt, in the order given: the generated token ids and (when asked) their log-probabilities."""

    token_ids: list[list[int]]
    logprobs: list[list[float]] | None


def generate_rows(model, prompts: list[list[int]], caches: list[list] | None, *, max_tokens: int, batch_size: int,
                  sampler, stop_tokens, stream: mx.Stream, logprobs: bool = False,
                  on_row_done: Callable[[int, int], None] | None = None) -> Rows:
    """Generate for every prompt (each with its own starting cache, or None); `on_row_done(done, total)`
    after each finished row. An end-of-sequence token ends a row and is not part of its output."""
    from mlx_lm.generate import BatchGenerator

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    generator = BatchGenerator(model, stop_tokens=[[t] for t in stop_tokens], sampler=sampler,
                               completion_batch_size=batch_size, prefill_batch_size=min(batch_size, PREFILL_BATCH),
                               stream=stream)
    try:
        uids = generator.insert([prompts[i] for i in order], [max_tokens] * len(order),
                                caches=[caches[i] for i in order] if caches is not None else None)
        row_of = dict(zip(uids, order))
        tokens: list[list[int]] = [[] for _ in prompts]
        scores: list[list[float]] = [[] for _ in prompts]
        done = 0
        while responses := generator.next_generated():
            for response in responses:
                row = row_of[response.uid]
                if response.finish_reason != "stop":
                    tokens[row].append(response.token)
                    if logprobs:
                        scores[row].append(response.logprobs[response.token].item())
                if response.finish_reason is not None:
                    done += 1
                    if on_row_done:
                        on_row_done(done, len(prompts))
    finally:
        generator.close()
    return Rows(tokens, scores if logprobs else None)
