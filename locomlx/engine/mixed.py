"""Mixed-adapter batches: one forward pass in which every row uses its own resident adapter (or none).

mlx-lm's batch generation keeps its rows in a batch KV cache and, as rows finish
or join (continuous batching), filters, extends and merges that cache. Each
row's adapter weights ride along as one more entry of the cache (`AdapterRows`),
so they stay aligned with the rows through all of it; `MixedModel` hands them to
the LoRA layers (engine/lora.py) before each forward pass.
"""

from __future__ import annotations

from locomlx.engine.lora import AdapterMix, AdapterSelection

import mlx.core as mx


class AdapterRows:
    """A batch-cache entry (mlx-lm's cache protocol) holding each row's weights over the mix's stacked columns."""

    def __init__(self, weights: mx.array):
        self.weights = weights  # (rows, 1, columns)

    @property
    def state(self) -> mx.array:
        return self.weights

    @property
    def nbytes(self) -> int:
        return self.weights.nbytes

    @classmethod
    def merge(cls, caches: list["AdapterRows"]) -> "AdapterRows":
        return cls(mx.concatenate([c.weights for c in caches]))

    def extend(self, other: "AdapterRows") -> None:
        self.weights = mx.concatenate([self.weights, other.weights])

    def filter(self, batch_indices) -> None:
        self.weights = self.weights[mx.array(batch_indices)]

    def extract(self, idx: int) -> "AdapterRows":
        return AdapterRows(self.weights[idx:idx + 1])

    def prepare(self, **kwargs) -> None:
        """Padding concerns the KV entries only: a row's adapter is the same at every position."""

    def finalize(self) -> None:
        """Nothing to undo after padding (see prepare)."""


class MixedModel:
    """The model as mlx-lm's batch generator calls it, with the row weights taken off the end of the cache."""

    def __init__(self, model, selection: AdapterSelection):
        self.model = model
        self.selection = selection

    def __call__(self, inputs: mx.array, cache: list, **kwargs) -> mx.array:
        *layer_caches, rows = cache
        self.selection.mix.row_weights = rows.weights
        return self.model(inputs, cache=layer_caches, **kwargs)


def plan_mix(row_adapters: list[str | None], widths: dict[str, int], dtype) -> tuple[AdapterMix, list[AdapterRows]]:
    """The mix for a batch whose rows use `row_adapters` (None = base), and each row's starting cache entry.

    `widths` maps each adapter to its largest rank over all layers: its share of the stacked columns.
    """
    names = tuple(dict.fromkeys(a for a in row_adapters if a is not None))
    mix = AdapterMix(names, tuple(widths[n] for n in names))
    offsets, total = {}, 0
    for name, width in zip(mix.names, mix.widths):
        offsets[name] = (total, total + width)
        total += width
    rows = []
    for adapter in row_adapters:
        weights = [0.0] * total
        if adapter is not None:
            start, end = offsets[adapter]
            weights[start:end] = [1.0] * (end - start)
        rows.append(AdapterRows(mx.array(weights, dtype=dtype).reshape(1, 1, total)))
    return mix, rows
