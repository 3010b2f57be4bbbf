"""A linear softmax classifier in numpy, with temperature calibration and an abstention threshold.

Small on purpose: a few thousand pooled hidden states of a few hundred dimensions train in
well under a second, and the whole model is a weight matrix saved beside the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LinearClassifier:
    classes: list[str]
    mean: np.ndarray  # feature standardisation
    scale: np.ndarray
    weights: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)
    temperature: float = 1.0  # calibration: probabilities = softmax(logits / temperature)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weights + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features) / self.temperature)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def fit_logistic(features: np.ndarray, labels: np.ndarray, classes: list[str], l2: float = 1e-3,
                 steps: int = 400, lr: float = 0.1) -> LinearClassifier:
    """Multinomial logistic regression by full-batch Adam on standardised features (deterministic)."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    x = (features - mean) / scale
    n, d = x.shape
    onehot = np.eye(len(classes))[labels]
    params = [np.zeros((d, len(classes))), np.zeros(len(classes))]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    for step in range(1, steps + 1):
        error = (softmax(x @ params[0] + params[1]) - onehot) / n
        grads = [x.T @ error + l2 * params[0], error.sum(axis=0)]
        for p, g, (m, v) in zip(params, grads, moments):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return LinearClassifier(list(classes), mean, scale, params[0], params[1])


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of held-out labels (grid search)."""
    grid = np.geomspace(0.2, 10.0, 60)
    nll = [-np.log(softmax(logits / t)[np.arange(len(labels)), labels] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return float(sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def predict_with_fallback(probabilities: np.ndarray, threshold: float, fallback: int) -> np.ndarray:
    """argmax, except `fallback` (the general class) wherever the top probability is below `threshold`."""
    picked = probabilities.argmax(axis=1)
    return np.where(probabilities.max(axis=1) >= threshold, picked, fallback)


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray, fallback: int) -> float:
    """The confidence threshold with the best validation accuracy (ties: the lowest, i.e. abstain least)."""
    candidates = np.unique(np.concatenate([[0.0], probabilities.max(axis=1)]))
    accuracy = [(predict_with_fallback(probabilities, t, fallback) == labels).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])
