"""Transferability scores: how well a candidate source suits the target, without fine-tuning it.

Numpy arrays in, a float out; higher is better for every score. LogME (its default fixed-point
algorithm), LEEP and NCE compute what the authors' reference code computes (thuml/LogME: `LogME.py`,
`LEEP.py`, `NCE.py`); H-score is Bao et al. 2019 as in TLlib, and its shrinkage-regularized form
(Ibrahim et al. 2022) for features that outnumber the samples. `knn_score` and `linear_probe_score`
are cross-validated accuracies of a k-NN and an L2 logistic regression on the features. This module
imports numpy and scipy only, so scoring many candidates costs seconds.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

__all__ = [
    "NoHeadError",
    "hscore",
    "knn_score",
    "leep",
    "linear_probe_score",
    "logme",
    "nce",
    "regularized_hscore",
]


class NoHeadError(ValueError):
    """LEEP and NCE need the source task's classifier; the candidate has none."""


# ----------------------------------------------------------------------------- input checks
def _labels(labels, n: int | None = None, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class index per sample), got shape {y.shape}.")
    if y.size == 0:
        raise ValueError(f"{name} is empty: give at least one sample per class.")
    if not (
        np.issubdtype(y.dtype, np.integer)
        or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))
    ):
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}.")
    if y.min() < 0:
        raise ValueError(f"{name} holds a negative class index ({int(y.min())}); use indices 0..C-1.")
    if n is not None and len(y) != n:
        raise ValueError(f"{name} has {len(y)} entries but the first argument has {n} rows; they must match.")
    return y.astype(np.int64)


def _matrix(values, name: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"{name} is None: give a 2-D array (samples x dimensions).")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples x dimensions), got shape {x.shape}.")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}).")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite values; check the features the backbone produced.")
    return x


def _two_classes(y: np.ndarray, name: str = "labels") -> None:
    if len(np.unique(y)) < 2:
        raise ValueError(f"{name} holds a single class ({int(y[0])}); a score needs at least two classes.")


def _no_head(values, name: str) -> None:
    if values is None:
        raise NoHeadError(
            f"{name} is None: the candidate has no source classifier (head), which LEEP and NCE need; "
            "use logme/hscore/knn_score/linear_probe_score on its features instead."
        )


# ----------------------------------------------------------------------------- LogME
def logme(features, labels) -> float:
    """LogME (You et al. 2021): mean over classes of the log marginal evidence of a Bayesian linear
    model from `features` (N x D) to each one-hot label column; fixed-point algorithm of the reference."""
    f = _matrix(features, "features")
    y = _labels(labels, len(f))
    _two_classes(y)
    n, d = f.shape
    u, s, _ = _svd(f)
    sigma = (s**2).reshape(-1, 1)
    evidences = []
    for c in range(int(y.max()) + 1):
        y_ = (y == c).astype(np.float64).reshape(-1, 1)
        x2 = (u.T @ y_) ** 2
        res_x2 = (y_**2).sum() - x2.sum()
        evidences.append(_evidence(x2, res_x2, sigma, n, d))
    return float(np.mean(evidences))


def _svd(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of f; for N > D through the D x D Gram matrix, truncated at its rank (as the reference)."""
    if f.shape[0] <= f.shape[1]:
        return np.linalg.svd(f, full_matrices=False)
    _, s2, vh = np.linalg.svd(f.T @ f)
    s = np.sqrt(s2)
    k = int(np.sum(s > 1e-10))
    return (f @ vh.T)[:, :k] / s[:k].reshape(1, -1), s[:k], vh[:k]


def _evidence(x2: np.ndarray, res_x2: float, sigma: np.ndarray, n: int, d: int) -> float:
    alpha, beta = 1.0, 1.0
    for _ in range(11):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum()
        m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
        res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
        alpha = gamma / (m2 + 1e-5)
        beta = (n - gamma) / (res2 + 1e-5)
        if abs(alpha / beta - t) / t <= 1e-3:
            break
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * sigma))
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * np.log(2 * np.pi)
    )
    return float(evidence / n)


# ----------------------------------------------------------------------------- LEEP, NCE
def leep(source_probs, labels) -> float:
    """LEEP (Nguyen et al. 2020): mean log-likelihood of the target labels under the source head's
    class probabilities (N x C_s, rows summing to 1) mapped through the empirical P(target | source)."""
    _no_head(source_probs, "source_probs")
    p = _matrix(source_probs, "source_probs")
    if p.min() < 0 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(
            "source_probs must hold probabilities (non-negative rows summing to 1); apply a softmax to "
            "the source head's logits first."
        )
    y = _labels(labels, len(p))
    n = len(p)
    joint = np.zeros((int(y.max()) + 1, p.shape[1]))
    np.add.at(joint, y, p / float(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_target_given_source = (joint / joint.sum(axis=0, keepdims=True)).T
        empirical = (p @ p_target_given_source)[np.arange(n), y]
        return float(np.mean(np.log(empirical)))


def nce(source_labels, labels) -> float:
    """NCE (Tran et al. 2019): minus the conditional entropy H(target | source) of the target labels
    given the source head's hard predictions `source_labels` (N,)."""
    _no_head(source_labels, "source_labels")
    z = _labels(source_labels, name="source_labels")
    y = _labels(labels, len(z))
    n = len(z)
    joint = np.zeros((int(y.max()) + 1, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0 / n)
    p_z = joint.sum(axis=0, keepdims=True)
    mask = p_z.reshape(-1) != 0
    cond = (joint[:, mask] / p_z[:, mask]).T + 1e-20
    entropy = np.sum(-cond * np.log(cond), axis=1, keepdims=True)
    return float(-np.sum(entropy * p_z.reshape(-1, 1)[mask]))


# ----------------------------------------------------------------------------- H-score
def hscore(features, labels) -> float:
    """H-score (Bao et al. 2019): tr(cov(f)^+ cov(E[f | y])), the between-class share of the
    feature covariance (TLlib's definition, pseudo-inverse of the feature covariance)."""
    f = _matrix(features, "features")
    y = _labels(labels, len(f))
    _two_classes(y)
    cov_f = np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    cov_g = np.cov(g, rowvar=False).reshape(f.shape[1], f.shape[1])
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


def regularized_hscore(features, labels) -> float:
    """H-score with a Ledoit-Wolf shrunk feature covariance (Ibrahim et al. 2022, TLlib's
    `regularized_h_score`): stays informative when the features outnumber the samples, where the plain
    H-score saturates at C - 1."""
    f = _matrix(features, "features")
    y = _labels(labels, len(f))
    _two_classes(y)
    f = f - f.mean(axis=0, keepdims=True)
    shrinkage = _ledoit_wolf_shrinkage(f)
    emp = f.T @ f / len(f)
    mu = np.trace(emp) / f.shape[1]
    cov_f = (1.0 - shrinkage) * emp + shrinkage * mu * np.eye(f.shape[1])
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    cov_g = np.cov(g, rowvar=False).reshape(f.shape[1], f.shape[1])
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ ((1.0 - shrinkage) * cov_g)))


def _ledoit_wolf_shrinkage(x: np.ndarray) -> float:
    """The Ledoit-Wolf shrinkage intensity of centered samples `x` (the estimate scikit-learn uses)."""
    n, p = x.shape
    if p == 1:
        return 0.0
    x2 = x**2
    trace = x2.sum(axis=0) / n
    mu = trace.sum() / p
    delta_ = np.sum((x.T @ x) ** 2) / n**2
    beta = (np.sum(x2.T @ x2) / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace.sum() + p * mu**2) / p
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


# ----------------------------------------------------------------------------- k-NN, linear probe
def _folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Stratified fold index arrays: each class's (shuffled) samples dealt round-robin over k folds."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = np.arange(len(idx)) % k
    return [np.flatnonzero(fold_of == i) for i in range(k)]


def _normalize(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def knn_score(features, labels, k: int = 5) -> float:
    """Leave-one-out accuracy of a cosine k-NN (majority vote, ties to the larger summed similarity)."""
    f = _normalize(_matrix(features, "features"))
    y = _labels(labels, len(f))
    _two_classes(y)
    if not 1 <= k < len(f):
        raise ValueError(f"k={k} must be between 1 and the number of samples minus one ({len(f) - 1}).")
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(f), int(y.max()) + 1))
    rows = np.repeat(np.arange(len(f)), k)
    np.add.at(votes, (rows, y[nearest].ravel()), 1.0 + 1e-6 * sim[rows, nearest.ravel()])
    return float(np.mean(votes.argmax(axis=1) == y))


def linear_probe_score(features, labels, folds: int = 5, l2: float = 1e-3, seed: int = 0) -> float:
    """Stratified k-fold accuracy of an L2-regularized multinomial logistic regression (L-BFGS) on the
    standardized features; `folds` is capped at the smallest class size."""
    f = _matrix(features, "features")
    y = _labels(labels, len(f))
    _two_classes(y)
    folds = min(int(folds), int(np.bincount(y)[np.unique(y)].min()))
    if folds < 2:
        raise ValueError("linear_probe_score needs at least 2 samples of every class (for 2 folds).")
    correct = 0
    for held in _folds(y, folds, seed):
        train = np.setdiff1d(np.arange(len(y)), held)
        mean, std = f[train].mean(axis=0), f[train].std(axis=0) + 1e-8
        w = _fit_logistic((f[train] - mean) / std, y[train], int(y.max()) + 1, l2)
        correct += int(np.sum(_predict((f[held] - mean) / std, w) == y[held]))
    return correct / len(y)


def _fit_logistic(x: np.ndarray, y: np.ndarray, classes: int, l2: float) -> np.ndarray:
    xb = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(classes)[y]

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(xb.shape[1], classes)
        logp = log_softmax(xb @ w, axis=1)
        grad = xb.T @ (softmax(xb @ w, axis=1) - onehot) / len(xb) + l2 * w
        return -np.mean(np.sum(onehot * logp, axis=1)) + 0.5 * l2 * np.sum(w**2), grad.ravel()

    w0 = np.zeros(xb.shape[1] * classes)
    return minimize(loss, w0, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x.reshape(-1, classes)


def _predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (np.hstack([x, np.ones((len(x), 1))]) @ w).argmax(axis=1)
