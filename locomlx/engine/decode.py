"""Token-by-token generation for one conversation, each one-token step a single compiled MLX graph.

A decode step computes little (one token through 30 layers) but issues some 600 MLX operations, and on
a CPU their dispatch, not the arithmetic, sets the speed. Compiling the step (`mx.compile`) records those operations
once, fuses the elementwise ones and replays them without Python; `locomlx bench` measures the result.

A compiled graph needs fixed shapes, and a KV cache grows by one position per step. So inside the graph
each layer's cache is a `StepKV`: the step's key and value are written into a copy of the cache's whole
preallocated buffer (mlx-lm's `KVCache` grows it 256 positions at a time), attention reads all of it
with the positions not yet written masked, and the copy becomes the cache's buffer. The graph's shapes
change only when the buffer grows. (Attending to the old buffer and the new position separately, with
no copy, takes twice the operations and measured slower at these sizes.)

The model's attention must hand a `StepKV` cache to `StepKV.attend`: `cpu_kernels.install` does that, so
compiled steps are used where those kernels are installed (float32 on a CPU); elsewhere steps run the
model's own forward pass. So do models whose caches are not all plain growing `KVCache`s (the rotating
caches of sliding-window layers, as in Gemma 3): their masks and write positions follow other rules.
A compiled step holds the weights it saw when traced, so the engine calls
`Decoder.forget()` whenever adapters are loaded or unloaded, and keys its steps by the active adapter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

from locomlx.models.cpu_kernels import MASKED
from locomlx.models.packed import decoding_on_packed_weights

import mlx.core as mx
from mlx_lm.models.cache import KVCache


class StepKV:
    """One layer's KV cache as seen inside a compiled one-token step (see the module docstring)."""

    def __init__(self, keys: mx.array, values: mx.array, offset: mx.array, bias: mx.array):
        self.keys, self.values = keys, values  # the cache's buffers: (batch, kv_heads, capacity, dim)
        self.offset = offset  # scalar int array: positions already written (rope reads it too)
        self.bias = bias  # (capacity,) 0 up to and including `offset`, MASKED after: added to the scores

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        start = self.offset.reshape(1)
        self.keys = mx.slice_update(self.keys, keys, start, axes=(2,))
        self.values = mx.slice_update(self.values, values, start, axes=(2,))
        return self.keys, self.values

    def attend(self, queries: mx.array, keys: mx.array, values: mx.array, scale: float) -> mx.array:
        """Attention of one query position over the buffer's written positions (`keys`, `values`)."""
        batch, heads, _, dim = queries.shape
        kv_heads = keys.shape[1]
        q = (queries * scale).reshape(batch, kv_heads, heads // kv_heads, dim)  # grouped-query attention
        weights = mx.softmax(q @ keys.swapaxes(-1, -2) + self.bias, axis=-1)
        return (weights @ values).reshape(batch, heads, 1, dim)


class Decoder:
    """Compiled one-token steps for one model, one per step key (the engine's active adapter)."""

    def __init__(self, model):
        self.model = model
        self._steps: dict = {}

    def forget(self) -> None:
        """Drop every compiled step: the weights they hold may have changed."""
        self._steps.clear()

    def _compiled(self, key):
        if key not in self._steps:
            model = self.model

            def step(tokens, offset, keys, values):
                bias = (mx.arange(keys[0].shape[2]) > offset) * MASKED
                caches = [StepKV(k, v, offset, bias) for k, v in zip(keys, values)]
                logits = model(tokens, cache=caches)[:, -1, :]
                return logits, [c.keys for c in caches], [c.values for c in caches]

            self._steps[key] = mx.compile(step)
        return self._steps[key]

    def step(self, tokens: mx.array, caches: list, key=None) -> mx.array:
        """Logits of the next token after `tokens` (batch, 1), appending it to `caches` (mlx-lm KVCaches
        already holding the prompt)."""
        if not all(type(c) is KVCache for c in caches):
            return self.model(tokens, cache=caches)[:, -1, :]
        if caches[0].keys is None or caches[0].offset >= caches[0].keys.shape[2]:
            # The buffer is empty or full: mlx-lm's forward pass grows it (every 256 tokens). The compiled
            # step must never run then: its write position would lie outside the buffer.
            return self.model(tokens, cache=caches)[:, -1, :]
        logits, keys, values = self._compiled(key)(tokens, mx.array(caches[0].offset),
                                                   [c.keys for c in caches], [c.values for c in caches])
        for cache, k, v in zip(caches, keys, values):  # mlx-lm's KVCache fields, as its update_and_fetch sets them
            cache.keys, cache.values = k, v
            cache.offset += 1
        return logits


@dataclass
class DecodeStats:
    """What one `decode` call did: prompt and generated token counts, their seconds, and why it stopped."""

    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_tokens: int = 0
    generation_seconds: float = 0.0
    finish_reason: str | None = None

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generation_tokens / self.generation_seconds if self.generation_seconds else 0.0


def decode(model, prompt: list[int], *, max_tokens: int, sampler: Callable[[mx.array], mx.array],
           stop_tokens, decoder: Decoder | None, step_key=None, stats: DecodeStats | None = None,
           prefill_chunk: int = 512) -> Iterator[int]:
    """Yield generated token ids after `prompt` until a stop token (not yielded) or `max_tokens`.

    The prompt is prefilled in chunks of `prefill_chunk` tokens (bounding the attention's memory); each
    further token is one step, compiled when `decoder` is given. `stats` receives the timings."""
    from mlx_lm.models.cache import make_prompt_cache

    stats = stats if stats is not None else DecodeStats()
    stats.prompt_tokens = len(prompt)
    stop = set(stop_tokens)
    caches = make_prompt_cache(model)
    start = time.perf_counter()
    tokens = mx.array(prompt)[None]
    for begin in range(0, len(prompt) - 1, prefill_chunk):
        chunk = tokens[:, begin:min(begin + prefill_chunk, len(prompt) - 1)]
        model(chunk, cache=caches)
        mx.eval([c.state for c in caches])  # only the keys and values: the chunk's logits are never computed
    logits = model(tokens[:, -1:], cache=caches)[:, -1, :]
    token = sampler(logits).item()
    stats.prompt_seconds = time.perf_counter() - start
    start = time.perf_counter()
    stats.finish_reason = "length"
    with decoding_on_packed_weights(model):
        for produced in range(max_tokens):
            stats.generation_tokens = produced + 1  # a stop token counts: the model generated it
            if token in stop:
                stats.finish_reason = "stop"
                break
            yield token
            if produced + 1 == max_tokens:
                break
            step_input = mx.array([[token]])
            logits = (decoder.step(step_input, caches, step_key) if decoder
                      else model(step_input, cache=caches)[:, -1, :])
            token = sampler(logits).item()
    stats.generation_seconds = time.perf_counter() - start
