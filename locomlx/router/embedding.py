"""The embedding router (v2): the loaded base model's own hidden states, classified in numpy.

A query is embedded by running only the first `layers` transformer blocks of the base model
(no adapter, no second model in memory) over at most `max_tokens` of its tokens and
mean-pooling the hidden states; early blocks already separate topics and styles well, and
skipping the rest keeps routing to a few milliseconds. A calibrated linear classifier over
the domains + `general` decides through a fallback chain: the top domain answers if its probability
reaches that domain's threshold, else the second domain if it reaches its own, else the base model
(thresholds chosen on validation queries). User feedback (router/feedback.py) can join the training data.

The trained router lives in the library at `router/embedding.npz`, stamped with the registry
hash and base model it was trained for; it refuses to run against a changed registry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from locomlx.atomic import write_bytes_atomic
from locomlx.engine.engine import Engine
from locomlx.errors import LocomlxError
from locomlx.models.anatomy import block_states
from locomlx.models.load import compute_stream
from locomlx.registry import Registry, active_adapters, registry_hash
from locomlx.router.classifier import (
    LinearClassifier,
    choose_thresholds,
    expected_calibration_error,
    fit_logistic,
    fit_temperature,
    predict_with_fallback,
)
from locomlx.router.data import routing_queries
from locomlx.router.decision import GENERAL, ChainStep, RouteDecision
from locomlx.router.feedback import RoutingLabel, feedback_since, last_feedback_id

import mlx.core as mx
import numpy as np

LAYERS = 8
MAX_TOKENS = 96
FILE = Path("router") / "embedding.npz"
FEEDBACK_WEIGHT = 20.0  # a correction counts as this many training queries: docs/research/feedback.md chose it


@contextmanager
def plain_base(engine: Engine):
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
    if layers < 1:
        raise LocomlxError(f"Router layers must be at least 1, got {layers}.")
    layers = min(layers, len(engine.model.layers))  # a model shallower than `layers`: all of its blocks
    encoded = [engine.tokenizer.encode(t)[:max_tokens] or [0] for t in texts]
    pooled = []
    with plain_base(engine), mx.stream(compute_stream()):
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            width = max(map(len, chunk))
            tokens = mx.array([ids + [0] * (width - len(ids)) for ids in chunk])
            # Right padding + a causal mask: real tokens never attend to the padding after them.
            keep = mx.array([[1.0] * len(ids) + [0.0] * (width - len(ids)) for ids in chunk])[..., None]
            hidden = block_states(engine.model, tokens, {layers})[layers]
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
    thresholds: dict[str, float]  # domain -> the probability its adapter needs to answer
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
        return chain_decision(probabilities, self.classes, self.thresholds, self.adapters, self.name, seconds)


def chain_decision(probabilities: np.ndarray, classes: list[str], thresholds: dict[str, float],
                   adapters: dict[str, str], router: str, seconds: float) -> RouteDecision:
    """The decision of the fallback chain (classifier.predict_with_fallback): top domain, else the second, else
    the base model, with every step it looked at."""
    picked = pick_domains(probabilities[None], classes, thresholds)[0]
    scores = {c: float(p) for c, p in zip(classes, probabilities)}
    steps = []
    for index in np.argsort(-probabilities, kind="stable")[:2]:
        domain = classes[int(index)]
        if domain == GENERAL:
            break
        steps.append(ChainStep(domain, adapters.get(domain), scores[domain], thresholds[domain], domain == picked))
        if domain == picked:
            break
    top = classes[int(probabilities.argmax())]
    reason = ""
    if picked != top or (picked == GENERAL and steps):
        reason = ", then ".join(s.text() for s in steps) + (": base model" if picked == GENERAL else "")
    return RouteDecision(adapters.get(picked), picked, scores[picked] if picked != GENERAL else scores[top],
                         scores, router, seconds, reason, steps)


def pick_domains(probabilities: np.ndarray, classes: list[str], thresholds: dict[str, float]) -> list[str]:
    """The fallback chain's domain for every row of `probabilities` (classifier.predict_with_fallback)."""
    bars = np.array([thresholds.get(c, 0.0) for c in classes])
    return [classes[i] for i in predict_with_fallback(probabilities, bars, classes.index(GENERAL))]


def router_file(library: Path) -> Path:
    return library / FILE


def _labels(domains: list[str], classes: list[str]) -> np.ndarray:
    return np.array([classes.index(d) for d in domains])


@dataclass
class FittedRouter:
    """A classifier, its calibration and its fallback thresholds, fitted on embedded queries."""

    classifier: LinearClassifier
    thresholds: dict[str, float]
    validation_accuracy: float
    ece_uncalibrated: float
    ece: float

    def predict(self, features: np.ndarray) -> list[str]:
        return pick_domains(self.classifier.probabilities(features), self.classifier.classes, self.thresholds)


def validation_rows(texts: list[str], share: int = 5) -> np.ndarray:
    """One query in `share` (by a hash of its text) calibrates instead of training: the same query lands on the
    same side in every fit, so routers trained with and without feedback are compared on the same rows."""
    return np.array([hashlib.sha256(b"router-validation\0" + t.encode()).digest()[0] % share == 0 for t in texts],
                    dtype=bool)


def fit_router(features: np.ndarray, domains: list[str], classes: list[str], validation: np.ndarray,
               weights: np.ndarray | None = None) -> FittedRouter:
    """Fit the classifier on the rows not in `validation`, then calibrate its temperature and choose the fallback
    thresholds on those that are. `weights` counts some rows more in the fit (feedback)."""
    labels = _labels(domains, classes)
    fit = ~validation
    classifier = fit_logistic(features[fit], labels[fit], classes,
                              weights=None if weights is None else weights[fit])
    val_features, val_labels = features[validation], labels[validation]
    ece_before = expected_calibration_error(classifier.probabilities(val_features), val_labels)
    classifier.temperature = fit_temperature(classifier.logits(val_features), val_labels)
    probabilities = classifier.probabilities(val_features)
    general = classes.index(GENERAL)
    bars = choose_thresholds(probabilities, val_labels, general)
    accuracy = float((predict_with_fallback(probabilities, bars, general) == val_labels).mean())
    thresholds = {c: float(t) for c, t in zip(classes, bars) if c != GENERAL}
    return FittedRouter(classifier, thresholds, accuracy, ece_before,
                        expected_calibration_error(probabilities, val_labels))


def fit_with_feedback(features: np.ndarray, texts: list[str], domains: list[str], classes: list[str],
                      corrections: int, weight: float) -> tuple[FittedRouter, np.ndarray]:
    """`fit_router` on library queries followed by `corrections` feedback rows (the last ones), each counted
    `weight` times, with the validation rows chosen by hash; returns the fit and its validation mask."""
    validation = validation_rows(texts)
    weights = np.concatenate([np.ones(len(texts) - corrections), np.full(corrections, float(weight))])
    return fit_router(features, domains, classes, validation, weights), validation


def _accuracy(fitted: FittedRouter, features: np.ndarray, domains: list[str]) -> float | None:
    return float(np.mean([p == d for p, d in zip(fitted.predict(features), domains)])) if domains else None


def train_embedding_router(engine: Engine, registry: Registry, library: Path, per_domain: int = 600,
                           layers: int = LAYERS, max_tokens: int = MAX_TOKENS, seed: int = 0,
                           feedback: list[RoutingLabel] | None = None, feedback_weight: float = FEEDBACK_WEIGHT,
                           on_progress: Callable[[str], None] | None = None,
                           on_count: Callable[[int, int], None] | None = None) -> EmbeddingRouter:
    """Fit, calibrate and threshold the classifier on the library's training queries (one in five calibrates).

    With `feedback` (router/feedback.py's labels) the training part of it joins the queries, each counted
    `feedback_weight` times; its held-out part measures the router before (the same recipe without feedback)
    and after, reported in `meta["feedback"]`.
    """
    started = time.perf_counter()
    layers = min(layers, len(engine.model.layers))  # a model with fewer blocks runs them all
    adapters = active_adapters(registry)
    if not adapters:
        raise LocomlxError("The registry has no active adapters: nothing to route to. "
                           "Register and promote adapters first.")
    queries = [q for q in routing_queries(registry, library, "train", per_domain, seed)
               if q.domain in adapters or q.domain == GENERAL]
    classes = sorted(adapters) + [GENERAL]
    labels = [lab if lab.domain in adapters else replace(lab, domain=GENERAL) for lab in feedback or []]
    taught = [lab for lab in labels if not lab.heldout]
    heldout = [lab for lab in labels if lab.heldout]
    texts = [q.text for q in queries] + [lab.text for lab in taught + heldout]
    if on_progress:
        extra = f" and {len(labels)} from feedback" if labels else ""
        on_progress(f"embedding {len(queries)} training queries{extra} with the first {layers} blocks of the base "
                    "model")
    features = embed_queries(engine, texts, layers, max_tokens, on_progress=on_count)
    n = len(queries)
    domains = [q.domain for q in queries]
    fitted, validation = fit_with_feedback(features[:n], texts[:n], domains, classes, 0, feedback_weight)
    meta = {
        "registry_hash": registry_hash(registry),
        "base_model": engine.base.resolved.reference,
        "adapters": adapters,
        "trained": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feedback_last_id": last_feedback_id(library) if labels else 0,  # the feedback it has learnt from
    }
    if labels:
        end = n + len(taught)
        before = fitted
        fitted, validation = fit_with_feedback(features[:end], texts[:end], domains + [lab.domain for lab in taught],
                                               classes, len(taught), feedback_weight)
        held_features, held_domains = features[end:], [lab.domain for lab in heldout]
        library_rows = np.flatnonzero(validation[:n])
        library_domains = [domains[i] for i in library_rows]
        meta["feedback"] = {
            "labels": len(labels), "taught": len(taught), "heldout": len(heldout), "weight": feedback_weight,
            "heldout_accuracy_before": _accuracy(before, held_features, held_domains),
            "heldout_accuracy_after": _accuracy(fitted, held_features, held_domains),
            "library_validation_accuracy_before": _accuracy(before, features[library_rows], library_domains),
            "library_validation_accuracy_after": _accuracy(fitted, features[library_rows], library_domains),
        }
    meta.update({
        "train_queries": int((~validation).sum()),
        "validation_queries": int(validation.sum()),
        "validation_accuracy": fitted.validation_accuracy,
        "ece_uncalibrated": fitted.ece_uncalibrated,
        "ece": fitted.ece,
        "temperature": fitted.classifier.temperature,
        "thresholds": fitted.thresholds,
        "seconds": time.perf_counter() - started,
    })
    return EmbeddingRouter(engine, fitted.classifier, adapters, fitted.thresholds, layers, max_tokens, meta)


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


def pending_feedback(meta: dict, library: Path) -> int:
    """Verdicts with a routing label stored since the router last learnt from feedback."""
    return feedback_since(library, meta.get("feedback_last_id", 0))


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
            thresholds = {domain: float(meta["thresholds"][domain]) for domain in meta["adapters"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LocomlxError(f"Cannot read the router {path} ({exc}); {retrain}.") from exc
    if not router_is_current(meta, registry):
        raise LocomlxError(f"The router {path} was trained for a different registry (an active adapter was promoted, "
                           f"changed or removed since {meta['trained']}); {retrain}, or `loco registry sync`, which "
                           "also evaluates what a new domain needs.")
    if meta["base_model"] != engine.base.resolved.reference:
        raise LocomlxError(f"The router {path} was trained on base model '{meta['base_model']}', not "
                           f"'{engine.base.resolved.reference}'; {retrain}.")
    return EmbeddingRouter(engine, classifier, meta["adapters"], thresholds, meta["layers"],
                           meta["max_tokens"], meta)
