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
                 steps: int = 400, lr: float = 0.1, weights: np.ndarray | None = None) -> LinearClassifier:
    """Multinomial logistic regression by full-batch Adam on standardised features (deterministic);
    `weights` counts some examples more than others in the loss (a user's correction, say)."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    x = (features - mean) / scale
    n, d = x.shape
    onehot = np.eye(len(classes))[labels]
    if weights is not None:
        onehot = onehot * (weights * n / weights.sum())[:, None]
        n_weight = (weights * n / weights.sum())[:, None]
    else:
        n_weight = 1.0
    params = [np.zeros((d, len(classes))), np.zeros(len(classes))]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    for step in range(1, steps + 1):
        error = (softmax(x @ params[0] + params[1]) * n_weight - onehot) / n
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


def predict_with_fallback(probabilities: np.ndarray, thresholds: np.ndarray, fallback: int) -> np.ndarray:
    """The fallback chain, for every row: the top class if its probability reaches its threshold; else the second
    class if that one reaches its own; else `fallback` (the general class: the base model answers). A chain that
    meets the general class stops there, since general *is* the fallback."""
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=float), probabilities.shape[1:])
    rows = np.arange(len(probabilities))
    order = np.argsort(-probabilities, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1] if probabilities.shape[1] > 1 else order[:, 0]
    take_first = (first != fallback) & (probabilities[rows, first] >= thresholds[first])
    take_second = (~take_first & (first != fallback) & (second != fallback)
                   & (probabilities[rows, second] >= thresholds[second]))
    return np.where(take_first, first, np.where(take_second, second, fallback))


def choose_thresholds(probabilities: np.ndarray, labels: np.ndarray, fallback: int, rounds: int = 2) -> np.ndarray:
    """Per-class thresholds for the fallback chain with the best validation accuracy.

    Starts from the best single threshold for every class, then moves one class's threshold at a time
    while accuracy strictly improves, so a class the classifier over-predicts can ask for more
    confidence than one it under-predicts. The search starts from both the lowest and the highest of
    the best single thresholds (a move that needs two classes to change at once is found from one of
    them); on a tie the lowest wins, i.e. the chain abstains least.
    """
    grid = np.unique(np.concatenate([[0.0], np.round(probabilities.ravel(), 3)]))
    if len(grid) > 200:
        grid = np.unique(np.quantile(grid, np.linspace(0, 1, 200)))

    def accuracy(t):
        return float((predict_with_fallback(probabilities, t, fallback) == labels).mean())

    def ascend(thresholds, best):
        for _ in range(rounds):
            for c in range(probabilities.shape[1]):
                if c == fallback:
                    continue
                for t in grid:
                    trial = thresholds.copy()
                    trial[c] = t
                    if (score := accuracy(trial)) > best:
                        best, thresholds = score, trial
        return best, thresholds

    scores = np.array([accuracy(np.full(probabilities.shape[1], t)) for t in grid])
    tied = grid[scores == scores.max()]
    starts = [ascend(np.full(probabilities.shape[1], float(t)), scores.max()) for t in (tied[0], tied[-1])]
    return max(starts, key=lambda result: result[0])[1]  # max keeps the first (lowest start) on a tie
