"""The embedding router (v2): the loaded base model's own hidden states, classified in numpy.

A query is embedded by running only the first `layers` transformer blocks of the base model
(no adapter, no second model in memory) over at most `max_tokens` of its tokens and
mean-pooling the hidden states; early blocks already separate topics and styles well, and
skipping the rest keeps routing to a few milliseconds. A calibrated linear classifier over
the domains + `general` decides; below the validation-chosen threshold the base model answers.

The trained router lives in the library at `router/embedding.npz`, stamped with the registry
hash and base model it was trained for; it refuses to run against a changed registry.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from locomlx.atomic import write_bytes_atomic
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.models.load import compute_stream
from locomlx.registry import Registry, active_adapters, registry_hash
from locomlx.router.classifier import (
    LinearClassifier,
    choose_threshold,
    expected_calibration_error,
    fit_logistic,
    fit_temperature,
    predict_with_fallback,
)
from locomlx.router.data import Query, routing_queries
from locomlx.router.decision import GENERAL, RouteDecision

import mlx.core as mx
import numpy as np

LAYERS = 8
MAX_TOKENS = 96
FILE = Path("router") / "embedding.npz"


@contextmanager
def _plain_base(engine: Engine):
    """The engine with no adapter selected, restored afterwards (routing reads the base model)."""
    previous = engine.selection.active
    engine.selection.active = None
    try:
        yield
    finally:
        engine.selection.active = previous


def embed_queries(engine: Engine, texts: list[str], layers: int = LAYERS, max_tokens: int = MAX_TOKENS,
                  batch_size: int = 32, on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(len(texts), hidden) mean-pooled hidden states after the first `layers` blocks of the base model;
    `on_progress(done, total)` after every batch."""
    inner = engine.model.model
    if layers < 1:
        raise LocomlxError(f"Router layers must be at least 1, got {layers}.")
    encoded = [engine.tokenizer.encode(t)[:max_tokens] or [0] for t in texts]
    pooled = []
    with _plain_base(engine), mx.stream(compute_stream()):
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            width = max(map(len, chunk))
            tokens = mx.array([ids + [0] * (width - len(ids)) for ids in chunk])
            # Right padding + a causal mask: real tokens never attend to the padding after them.
            keep = mx.array([[1.0] * len(ids) + [0.0] * (width - len(ids)) for ids in chunk])[..., None]
            hidden = inner.embed_tokens(tokens)
            for block in inner.layers[:layers]:
                hidden = block(hidden, "causal" if width > 1 else None, cache=None)
            mean = (hidden.astype(mx.float32) * keep).sum(axis=1) / keep.sum(axis=1)
            pooled.append(np.array(mean))
            if on_progress:
                on_progress(min(start + batch_size, len(encoded)), len(encoded))
    return np.concatenate(pooled)


@dataclass
class EmbeddingRouter:
    engine: Engine
    classifier: LinearClassifier
    adapters: dict[str, str]  # domain -> adapter
    threshold: float
    layers: int = LAYERS
    max_tokens: int = MAX_TOKENS
    meta: dict | None = None
    name: str = "embedding"

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes

    def route(self, query: str) -> RouteDecision:
        start = time.perf_counter()
        probabilities = self.classifier.probabilities(
            embed_queries(self.engine, [query], self.layers, self.max_tokens))[0]
        seconds = time.perf_counter() - start
        scores = {c: float(p) for c, p in zip(self.classifier.classes, probabilities)}
        domain = self.classifier.classes[int(probabilities.argmax())]
        confidence = float(probabilities.max())
        if domain != GENERAL and confidence < self.threshold:
            return RouteDecision(None, GENERAL, confidence, scores, self.name, seconds,
                                 f"{domain} below threshold {self.threshold:.2f}: base model")
        return RouteDecision(self.adapters.get(domain), domain, confidence, scores, self.name, seconds)


def router_file(library: Path) -> Path:
    return library / FILE


def _labels(queries: list[Query], classes: list[str]) -> np.ndarray:
    return np.array([classes.index(q.domain) for q in queries])


def train_embedding_router(engine: Engine, registry: Registry, library: Path, per_domain: int = 600,
                           layers: int = LAYERS, max_tokens: int = MAX_TOKENS, seed: int = 0,
                           on_progress: Callable[[str], None] | None = None,
                           on_count: Callable[[int, int], None] | None = None) -> EmbeddingRouter:
    """Fit, calibrate and threshold the classifier on the library's training queries (80/20 split)."""
    started = time.perf_counter()
    layers = min(layers, len(engine.model.model.layers))  # a model with fewer blocks runs them all
    adapters = active_adapters(registry)
    if not adapters:
        raise LocomlxError("The registry has no active adapters: nothing to route to. "
                           "Register and promote adapters first.")
    queries = [q for q in routing_queries(registry, library, "train", per_domain, seed)
               if q.domain in adapters or q.domain == GENERAL]
    classes = sorted(adapters) + [GENERAL]
    random.Random(seed).shuffle(queries)
    if on_progress:
        on_progress(f"embedding {len(queries)} training queries with the first {layers} blocks of the base model")
    features = embed_queries(engine, [q.text for q in queries], layers, max_tokens, on_progress=on_count)
    labels = _labels(queries, classes)
    cut = int(len(queries) * 0.8)
    classifier = fit_logistic(features[:cut], labels[:cut], classes)
    val_features, val_labels = features[cut:], labels[cut:]
    val_logits = classifier.logits(val_features)
    ece_before = expected_calibration_error(classifier.probabilities(val_features), val_labels)
    classifier.temperature = fit_temperature(val_logits, val_labels)
    probabilities = classifier.probabilities(val_features)
    general = classes.index(GENERAL)
    threshold = choose_threshold(probabilities, val_labels, general)
    meta = {
        "registry_hash": registry_hash(registry),
        "base_model": engine.base.resolved.reference,
        "adapters": adapters,
        "trained": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "train_queries": cut,
        "validation_queries": len(queries) - cut,
        "validation_accuracy": float((predict_with_fallback(probabilities, threshold, general) == val_labels).mean()),
        "ece_uncalibrated": ece_before,
        "ece": expected_calibration_error(probabilities, val_labels),
        "temperature": classifier.temperature,
        "threshold": threshold,
        "seconds": time.perf_counter() - started,
    }
    return EmbeddingRouter(engine, classifier, adapters, threshold, layers, max_tokens, meta)


def save_router(router: EmbeddingRouter, library: Path) -> Path:
    path = router_file(library)
    c = router.classifier
    meta = dict(router.meta or {}, classes=c.classes, layers=router.layers, max_tokens=router.max_tokens)
    buffer = io.BytesIO()
    np.savez(buffer, mean=c.mean, scale=c.scale, weights=c.weights, bias=c.bias, meta=np.array(json.dumps(meta)))
    write_bytes_atomic(path, buffer.getvalue())
    return path


def router_is_current(meta: dict, registry: Registry) -> bool:
    """Whether a router trained with `meta` (its saved facts) still fits the registry's active adapters."""
    return meta.get("registry_hash") == registry_hash(registry)


def saved_router_meta(library: Path) -> dict | None:
    """The saved router's facts, or None when there is none or it cannot be read."""
    path = router_file(library)
    try:
        with np.load(path) as saved:
            return json.loads(str(saved["meta"]))
    except (OSError, ValueError, KeyError):
        return None


def load_embedding_router(engine: Engine, registry: Registry, library: Path) -> EmbeddingRouter:
    """The saved router; refused when the registry or base model changed since it was trained."""
    path = router_file(library)
    retrain = "run `locomlx router train` to train it for the current registry"
    if not path.is_file():
        raise LocomlxError(f"No embedding router at {path}; {retrain}.")
    try:
        with np.load(path) as saved:
            meta = json.loads(str(saved["meta"]))
            classifier = LinearClassifier(meta["classes"], saved["mean"], saved["scale"], saved["weights"],
                                          saved["bias"], meta["temperature"])
    except (OSError, ValueError, KeyError) as exc:
        raise LocomlxError(f"Cannot read the router {path} ({exc}); {retrain}.") from exc
    if not router_is_current(meta, registry):
        raise LocomlxError(f"The router {path} was trained for a different registry (an active adapter was promoted, "
                           f"changed or removed since {meta['trained']}); {retrain}, or `loco registry sync`, which "
                           "also evaluates what a new domain needs.")
    if meta["base_model"] != engine.base.resolved.reference:
        raise LocomlxError(f"The router {path} was trained on base model '{meta['base_model']}', not "
                           f"'{engine.base.resolved.reference}'; {retrain}.")
    return EmbeddingRouter(engine, classifier, meta["adapters"], meta["threshold"], meta["layers"],
                           meta["max_tokens"], meta)
