"""The Arrow router: training-free routing from the adapters' own LoRA weights (Ostapenko et al., 2024).

Each adapter's update to a linear layer, dW = A B, is summarised by its top singular direction u in the
layer's input space: the direction of inputs the adapter changes most. A query's tokens are run through
the base model; at every adapted attention layer the normalised input x of each token is compared with
every adapter's u (|cos(x, u)|, sign-free since u is). A domain's score is its best-matching token's
cosine, averaged over layers and projections; a softmax over the domains at `temperature` turns scores
into shares. The adapter with the largest share answers if its share reaches `threshold`, else the base
model does. (Arrow as published averages per-token softmaxes; on the shipped library the best-token
score routed clearly better: docs/routers.md.)

Nothing is trained: the prototypes come from the weight files, so an adapter added to the library is
routable as soon as it is active, and the router is always current with the registry. Only the
attention projections (q, k, v, or a fused qkv) are used: their input is the block's normalised residual
stream (the stream itself in post-norm blocks), which is read here with the model's own modules
(`input_layernorm`, then the whole block).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from locomlx.adapters.format import read_adapter
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.models.anatomy import block_states
from locomlx.models.load import compute_stream
from locomlx.registry import Registry, active_adapters
from locomlx.router.decision import GENERAL, ChainStep, RouteDecision
from locomlx.router.embedding import MAX_TOKENS, plain_base

import mlx.core as mx
import numpy as np

# The projections that read the block's normalised input: separate q, k, v, or phi3's fused qkv_proj.
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.qkv_proj")
_PROJECTION = re.compile(r"(?:^|\.)layers\.(\d+)\.(" + "|".join(re.escape(p) for p in PROJECTIONS) + ")$")
# Both constants were picked by hand once, on 200 training queries of the shipped library (docs/routers.md),
# and are never refit: an adapter added later is routed with them as they are.
TEMPERATURE = 0.01  # on |cosine| in [0, 1]
THRESHOLD = 0.35  # below this share the base model answers (there is no `general` prototype to win)


def top_direction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The unit top left singular vector of a @ b (input space), without forming the (in, out) matrix."""
    q, r = np.linalg.qr(a.astype(np.float64))
    u, _, _ = np.linalg.svd(r @ b.astype(np.float64), full_matrices=False)
    direction = q @ u[:, 0]
    return direction / np.linalg.norm(direction)


def adapter_prototypes(folders: dict[str, Path], layers: int) -> dict[int, np.ndarray]:
    """layer -> (domains, projections, hidden) prototypes, for the layers and projections every adapter adapts."""
    files = {domain: read_adapter(folder) for domain, folder in folders.items()}
    keys = sorted({k for f in files.values() for k in f.layers
                   if (match := _PROJECTION.search(k)) and int(match.group(1)) < layers})
    shared = [k for k in keys if all(k in f.layers for f in files.values())]
    if not shared:
        raise LocomlxError("The Arrow router needs LoRA updates on the attention projections "
                           f"({', '.join(PROJECTIONS)}) that every active adapter has; these adapters share none "
                           f"({', '.join(files)}). Use the embedding or keyword router.")
    by_layer: dict[int, list[str]] = {}
    for key in shared:
        by_layer.setdefault(int(_PROJECTION.search(key).group(1)), []).append(key)
    prototypes = {}
    for layer, layer_keys in by_layer.items():
        prototypes[layer] = np.stack([
            np.stack([top_direction(np.array(files[d].layers[k][0], dtype=np.float32),
                                    np.array(files[d].layers[k][1], dtype=np.float32)) for k in layer_keys])
            for d in folders])
    return prototypes


def _projection_input(block, hidden: mx.array) -> mx.array:
    """What the block's q/k/v projections read: the normalised residual stream, or the stream itself in
    post-norm blocks (olmo2), which have no input norm."""
    norm = getattr(block, "input_layernorm", None)
    return hidden if norm is None else norm(hidden)


class ArrowRouter:
    name = "arrow"

    def __init__(self, engine: Engine, registry: Registry, library: Path, temperature: float = TEMPERATURE,
                 threshold: float = THRESHOLD, max_tokens: int = MAX_TOKENS):
        self.engine = engine
        self.adapters = active_adapters(registry)  # domain -> adapter
        self.domains = sorted(self.adapters)
        self.classes = self.domains + [GENERAL]
        blocks = engine.model.layers
        folders = {d: library / registry.adapters[self.adapters[d]].path for d in self.domains}
        self.prototypes = {layer: mx.array(p.astype(np.float32))
                           for layer, p in adapter_prototypes(folders, len(blocks)).items()}
        self.temperature, self.threshold, self.max_tokens = temperature, threshold, max_tokens

    def shares(self, query: str) -> np.ndarray:
        """Each domain's share of the query (sums to 1)."""
        tokens = mx.array([self.engine.tokenizer.encode(query)[: self.max_tokens] or [0]])
        total = mx.zeros((len(self.domains),))  # summed over layers and projections
        blocks = self.engine.model.layers
        with plain_base(self.engine), mx.stream(compute_stream()):
            states = block_states(self.engine.model, tokens, set(self.prototypes))
            for index, hidden in states.items():
                x = _projection_input(blocks[index], hidden)[0].astype(mx.float32)  # (tokens, hidden)
                x = x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
                cosine = mx.abs(mx.einsum("th,dph->tdp", x, self.prototypes[index]))
                total = total + cosine.max(axis=0).mean(axis=1)
            shares = mx.softmax(total / len(self.prototypes) / self.temperature)
            return np.array(shares)

    def route(self, query: str) -> RouteDecision:
        start = time.perf_counter()
        shares = self.shares(query)
        seconds = time.perf_counter() - start
        scores = {d: float(s) for d, s in zip(self.domains, shares)}
        top = self.domains[int(shares.argmax())]
        step = ChainStep(top, self.adapters[top], scores[top], self.threshold, scores[top] >= self.threshold)
        if not step.taken:
            return RouteDecision(None, GENERAL, scores[top], scores, self.name, seconds,
                                 f"{step.text()}: base model", [step])
        return RouteDecision(self.adapters[top], top, scores[top], scores, self.name, seconds, "", [step])
