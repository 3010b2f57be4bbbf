"""A batch that never ends: rows join and leave between decode steps, each with its own adapter and sampler.

`Engine.generate_batch` answers a list known in advance; a server gets its requests one by one while
others are decoding. `LiveBatch` keeps one mlx-lm `BatchGenerator` open: `add` queues a prompt (it is
prefilled at the next step and then decodes with the rest), `step` advances every row by one token, and
`remove` drops a row whose client went away. Its mix stacks every plain adapter resident when it opened
(engine/mixed.py); a row's weights pick one adapter's columns, or several with the weights of a
composition `a:0.7+b:0.3`, which is the same sum of updates as the composed adapter (engine/compose.py),
so any composition of resident adapters joins without rebuilding anything.

New rows are prefilled one at a time by default (`prefill_rows`): requests arrive with prompts of any
length, and prefilled together each would be padded to the longest. With eight mixed prompts of 55 to 237
tokens arriving at once, the median row's first token came after 2.5 s instead of 5.1 s (and the last
after 3.8 s instead of 5.1 s), on 2 CPU cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from locomlx.engine.engine import Engine
from locomlx.engine.lora import AdapterMix
from locomlx.engine.mixed import AdapterRows, MixedModel
from locomlx.errors import LocomlxError
from locomlx.models.load import compute_stream

import mlx.core as mx

Sampler = Callable[[mx.array], mx.array]


def greedy(logprobs: mx.array) -> mx.array:
    """The most likely token of each row (one shared function, so greedy rows are sampled in one call)."""
    return mx.argmax(logprobs, axis=-1)


def row_sampler(temperature: float, top_p: float = 1.0, seed: int | None = None) -> Sampler:
    """A sampler with its own random key: a row's samples depend on its seed only, not on the rows beside it."""
    if temperature <= 0:
        return greedy
    from mlx_lm.sample_utils import apply_top_p

    key = mx.random.key(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        key, draw = mx.random.split(key)
        if top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        return mx.random.categorical(logprobs * (1 / temperature), key=draw)

    return sample


@dataclass
class Step:
    """One row's token from one step; `finished` is None while the row goes on, else 'stop' or 'length'.
    A 'stop' token is the end-of-sequence token itself and is not part of the answer."""

    uid: int
    token: int
    finished: str | None


class LiveBatch:
    def __init__(self, engine: Engine, max_rows: int = 32, prefill_rows: int = 1):
        from mlx_lm.generate import BatchGenerator

        self.engine = engine
        plain = [a for a in engine.adapters.values() if a.parts is None]
        self.mix = AdapterMix(tuple(a.name for a in plain), tuple(max(a.ranks) for a in plain))
        self._columns: dict[str, tuple[int, int]] = {}
        start = 0
        for name, width in zip(self.mix.names, self.mix.widths):
            self._columns[name] = (start, start + width)
            start += width
        self._width = start
        self.generator = BatchGenerator(MixedModel(engine.model, engine.selection),
                                        stop_tokens=[[t] for t in engine.tokenizer.eos_token_ids], sampler=greedy,
                                        completion_batch_size=max_rows,
                                        prefill_batch_size=min(max_rows, prefill_rows), stream=compute_stream())
        self.rows: set[int] = set()

    def covers(self, adapter: str | None) -> bool:
        """Whether `adapter` (a resident name or composition; None = base) can join this batch."""
        if adapter is None:
            return True
        resident = self.engine.adapters.get(adapter)
        parts = resident.parts if resident and resident.parts else [(adapter, 1.0)]
        return all(name in self._columns for name, _ in parts)

    def _weights(self, adapter: str | None) -> AdapterRows:
        weights = [0.0] * self._width
        if adapter is not None:
            if not self.covers(adapter):
                raise LocomlxError(f"Adapter '{adapter}' was loaded after this batch opened; "
                                   "it joins the next batch.")
            resident = self.engine.adapters[adapter]
            for name, weight in resident.parts or [(adapter, 1.0)]:
                start, end = self._columns[name]
                weights[start:end] = [weight] * (end - start)
        return AdapterRows(mx.array(weights, dtype=self.engine._adapter_dtype).reshape(1, 1, self._width))

    def add(self, prompt: list[int], adapter: str | None, max_tokens: int, sampler: Sampler = greedy) -> int:
        """Queue a row; it is prefilled at the next `step` and decodes from then on. Returns its uid."""
        from mlx_lm.models.cache import make_prompt_cache

        cache = make_prompt_cache(self.engine.model) + [self._weights(adapter)]
        (uid,) = self.generator.insert([prompt], [max_tokens], caches=[cache], samplers=[sampler])
        self.rows.add(uid)
        return uid

    def remove(self, uid: int) -> None:
        """Drop a row wherever it is (waiting, prefilling or decoding)."""
        if uid in self.rows:
            self.generator.remove([uid])
            self.rows.discard(uid)

    def step(self) -> list[Step]:
        """One token for every decoding row (rows queued since the last step are prefilled first)."""
        if not self.rows:
            return []
        selection = self.engine.selection
        previous = selection.active
        selection.mix, selection.active = self.mix, None
        try:
            responses = self.generator.next_generated()
        finally:
            selection.mix, selection.active = None, previous
        steps = [Step(r.uid, r.token, r.finish_reason) for r in responses]
        self.rows -= {s.uid for s in steps if s.finished}
        return steps

    def close(self) -> None:
        self.generator.close()
