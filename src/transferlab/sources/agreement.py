"""How well a ranking of candidate sources agrees with the truth (their tuned test accuracy), and how sure
that is: weighted Kendall tau (`scipy.stats.weightedtau`, the top of the ranking weighs most), Pearson r
and the top-1 regret (accuracy lost by taking the score's favourite instead of the best candidate), each
with a percentile bootstrap 95% interval over seeds: every resample draws each candidate's seeds again,
with replacement, and recomputes its mean accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of `x` (n,) with each row of `y` (B, n); nan where either side is constant."""
    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc**2).sum()) * np.sqrt((yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc @ xc) / denom
    return np.where(denom > 1e-15, r, np.nan)


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.weightedtau(x, y).statistic)


def resampled_means(accs: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, candidates) mean accuracies, each candidate's seeds resampled with replacement."""
    rng = np.random.default_rng(seed)
    columns = []
    for values in accs:
        values = np.asarray(values, dtype=float)
        picks = rng.integers(0, len(values), size=(n_boot, len(values)))
        columns.append(values[picks].mean(axis=1))
    return np.stack(columns, axis=1)


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def correlation(
    x: list[float], accs: list[np.ndarray], n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Pearson r of `x` (one value per candidate) with the mean of `accs` (each candidate's accuracies
    over seeds), with its bootstrap interval."""
    x_arr = np.asarray(x, dtype=float)
    means = np.array([np.mean(a) for a in accs])
    r = float(_pearson_rows(x_arr, means[None, :])[0]) if len(x_arr) >= 2 else math.nan
    low, high = (
        _interval(_pearson_rows(x_arr, resampled_means(accs, n_boot, seed)))
        if len(x_arr) >= 2
        else (
            math.nan,
            math.nan,
        )
    )
    return {"r": r, "r_low": low, "r_high": high}


def agreement(
    names: list[str], scores: list[float], accs: list[np.ndarray], n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Weighted tau, Pearson r and top-1 regret of `scores` against the mean of `accs`, with intervals.

    `names`, `scores` and `accs` are aligned, one entry per candidate (candidates without a finite score
    or without accuracies are left out by the caller). The favourite is the highest score; the best is
    the highest mean accuracy."""
    x = np.asarray(scores, dtype=float)
    means = np.array([np.mean(a) for a in accs])
    boot = resampled_means(accs, n_boot, seed)
    favourite = int(np.argmax(x))
    tau_boot = np.array([_tau(x, row) for row in boot]) if len(x) >= 2 else np.array([math.nan])
    regret_boot = boot.max(axis=1) - boot[:, favourite]
    out: dict[str, Any] = {
        "candidates": len(x),
        "tau": _tau(x, means),
        **dict(zip(("tau_low", "tau_high"), _interval(tau_boot), strict=True)),
        **correlation(list(x), accs, n_boot, seed),
        "regret": float(means.max() - means[favourite]),
        **dict(zip(("regret_low", "regret_high"), _interval(regret_boot), strict=True)),
        "favourite": names[favourite],
        "favourite_acc": float(means[favourite]),
        "best": names[int(np.argmax(means))],
        "best_acc": float(means.max()),
        "seeds": int(min(len(a) for a in accs)),
    }
    return out
