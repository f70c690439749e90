"""Statistics of a comparison (numbers only: no files, no plots).

- Per arm: mean and 95% t-interval over seeds (flagged as unreliable below `SMALL_N` seeds).
- Arms are compared **paired over seeds**: seed i of arm A and seed i of arm B must have seen the same
  training split (proved by the split hashes, else `UnpairedDataError`). The test is the paired t-test
  (`test="t"`, default) or the Wilcoxon signed-rank test (`test="wilcoxon"`, exact; it cannot reach
  p < 0.05 with fewer than 6 pairs). The effect size is the mean paired difference with its t-interval.
- Every pair of arms is tested, and Holm's step-down correction runs over all of those p-values at once
  (every block of a second factor included): the family-wise error rate stays at `alpha` whatever the
  report goes on to state. An arm "tied with the best" is one the top arm does not beat significantly
  after that correction; a winner is named only when the top arm beats every other arm.
- Across levels of a second factor (datasets, backbones): Friedman's test on the arms' mean ranks and
  the Nemenyi critical difference for the CD diagram (Demšar 2006).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from transferlab.core.names import DEFAULT_PAIRED_TEST, PAIRED_TESTS

SMALL_N = 5
TESTS = tuple(PAIRED_TESTS)


class UnpairedDataError(ValueError):
    """Two arms' runs with the same seed trained or were tested on different data."""


@dataclass
class Interval:
    n: int
    mean: float
    low: float
    high: float


def mean_interval(values, confidence: float = 0.95) -> Interval:
    """Mean and two-sided t-interval (NaN bounds for fewer than 2 values)."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(n, mean, mean - half, mean + half)


def intervals(df: pd.DataFrame, by: str | list[str], value: str) -> pd.DataFrame:
    """`mean_interval` of `value` per group of `by`: columns n, mean, low, high."""
    rows = {key: vars(mean_interval(part[value])) for key, part in df.groupby(by, sort=True)}
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass
class PairedResult:
    n: int
    diff_mean: float
    diff_low: float
    diff_high: float
    p_value: float


def paired_test(a, b, test: str = DEFAULT_PAIRED_TEST, confidence: float = 0.95) -> PairedResult:
    """Compare matched samples `a` and `b` (same seeds, same order): the mean of a - b, its t-interval,
    and the two-sided p-value of the chosen test."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(diff)
    interval = mean_interval(diff, confidence)
    if n < 2:
        return PairedResult(n, interval.mean, math.nan, math.nan, math.nan)
    if np.allclose(diff, 0.0, rtol=0.0, atol=1e-12):
        return PairedResult(n, 0.0, 0.0, 0.0, 1.0)  # identical results: no evidence of a difference
    sd = diff.std(ddof=1)
    if test == "wilcoxon":
        p = float(stats.wilcoxon(diff, zero_method="zsplit").pvalue)
    elif sd == 0.0:  # a constant non-zero difference: as strong as evidence gets
        p = 0.0
    else:  # the paired t-test (= scipy.stats.ttest_rel), written out: it runs for every pair of arms
        t = diff.mean() / (sd / math.sqrt(n))
        p = float(2.0 * stats.t.sf(abs(t), n - 1))
    return PairedResult(n, interval.mean, interval.low, interval.high, p)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm 1979; NaNs stay NaN and are not counted). Same numbers
    as statsmodels' `multipletests(method="holm")`, which runs a full garbage collection per call."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m:
        order = valid[np.argsort(p[valid], kind="stable")]
        steps = np.maximum.accumulate((m - np.arange(m)) * p[order])
        adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def paired_matrix(
    df: pd.DataFrame, arm: str, seed: str, value: str, hash_columns: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Seeds x arms table of `value`, after proving that equal seeds mean equal data.

    Every `hash_columns` value (e.g. the training split's sha256) must agree across arms for each seed,
    and test-set hashes (columns starting with `test`) across all runs; otherwise `UnpairedDataError`.
    """
    for column in hash_columns:
        if column not in df or df[column].isna().all():
            continue
        scope = [] if column.startswith("test") else [seed]
        groups = df.groupby(scope)[column] if scope else [(None, df[column])]
        for key, hashes in groups:
            if hashes.nunique() > 1:
                where = f"seed {key[0] if isinstance(key, tuple) else key}" if scope else "the test set"
                arms = df.loc[hashes.index].groupby(column)[arm].apply(lambda s: ", ".join(map(str, s)))
                detail = "; ".join(f"{h[:12]}: {names}" for h, names in arms.items())
                raise UnpairedDataError(
                    f"cannot pair arms: for {where} the runs saw different data ({column} differs: {detail}). "
                    "Paired comparisons need the same split per seed; run every arm with the same dataset "
                    "settings (classes, samples_per_class, val_fraction) and seeds."
                )
    duplicated = df.duplicated([arm, seed], keep=False)
    if duplicated.any():
        first = df[duplicated].iloc[0]
        raise UnpairedDataError(
            f"cannot pair arms: arm {first[arm]} has more than one run with seed {first[seed]}; "
            "keep one run per arm and seed."
        )
    return df.pivot(index=seed, columns=arm, values=value)


@dataclass
class Comparison:
    """The comparison of the arms of one block (one level of any other swept factor)."""

    table: pd.DataFrame  # one row per arm; see `COMPARISON_COLUMNS`
    best: str | None = None
    winner: str | None = None
    tied: list[str] = field(default_factory=list)
    pairs: pd.DataFrame | None = None  # every pair of arms: a, b, n, diff_mean, p_value (p_holm later)
    refused: str | None = None  # why pairing was refused
    _index: dict | None = field(default=None, repr=False)


COMPARISON_COLUMNS = [
    "arm",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "baseline",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "p_holm",
    "p_vs_best",
    "p_holm_vs_best",
    "tied_with_best",
]


def compare_arms(
    df: pd.DataFrame,
    arm: str = "arm",
    seed: str = "seed",
    value: str = "value",
    baseline: str | None = None,
    higher_is_better: bool = True,
    test: str = DEFAULT_PAIRED_TEST,
    hash_columns: tuple[str, ...] = (),
) -> Comparison:
    """Per-arm intervals and every paired comparison of one block (p-values not yet corrected)."""
    if test not in TESTS:
        raise ValueError(f"report.test={test} must be one of {', '.join(TESTS)}")
    arms = sorted(df[arm].astype(str).unique())
    data = df.assign(**{arm: df[arm].astype(str)})
    rows = []
    for name in arms:
        interval = mean_interval(data.loc[data[arm] == name, value])
        rows.append(
            {
                "arm": name,
                "n": interval.n,
                "mean": interval.mean,
                "ci_low": interval.low,
                "ci_high": interval.high,
            }
        )
    table = pd.DataFrame(rows, columns=["arm", "n", "mean", "ci_low", "ci_high"])
    table = table.sort_values("mean", ascending=not higher_is_better, kind="stable").reset_index(drop=True)
    result = Comparison(table=table, best=table["arm"].iloc[0] if len(table) else None)
    table["baseline"] = baseline if baseline in arms else None
    try:
        matrix = paired_matrix(data, arm, seed, value, hash_columns)
    except UnpairedDataError as exc:
        result.refused = str(exc)
        return result
    pairs = []
    values = matrix.reindex(columns=arms).to_numpy(dtype=float)
    for (i, a), (j, b) in itertools.combinations(enumerate(arms), 2):
        both = ~np.isnan(values[:, i]) & ~np.isnan(values[:, j])
        res = paired_test(values[both, i], values[both, j], test)
        pairs.append(
            {
                "a": a,
                "b": b,
                "n": res.n,
                "diff_mean": res.diff_mean,
                "diff_ci_low": res.diff_low,
                "diff_ci_high": res.diff_high,
                "p_value": res.p_value,
            }
        )
    result.pairs = pd.DataFrame(
        pairs, columns=["a", "b", "n", "diff_mean", "diff_ci_low", "diff_ci_high", "p_value"]
    )
    return result


def pair(result: Comparison, a: str, b: str) -> dict | None:
    """The comparison a - b (diff, interval and p-values, oriented as asked)."""
    if result.pairs is None or a == b:
        return None
    if result._index is None:
        result._index = {(r["a"], r["b"]): r for r in result.pairs.to_dict("records")}
    if (a, b) in result._index:
        return result._index[(a, b)]
    row = result._index.get((b, a))
    if row is None:
        return None
    flipped = -row["diff_mean"], -row["diff_ci_high"], -row["diff_ci_low"]
    return {
        **row,
        "a": a,
        "b": b,
        "diff_mean": flipped[0],
        "diff_ci_low": flipped[1],
        "diff_ci_high": flipped[2],
    }


def finish(comparisons: list[Comparison], alpha: float = 0.05, higher_is_better: bool = True) -> int:
    """Holm over every pair of every block at once; then the baseline columns, the tied-with-best set
    and the winner of each block. Returns the size of the corrected family."""
    families = [c for c in comparisons if c.pairs is not None and len(c.pairs)]
    all_p = np.concatenate([c.pairs["p_value"].to_numpy(dtype=float) for c in families]) if families else []
    adjusted = holm(all_p)
    start = 0
    for c in families:
        c.pairs["p_holm"] = adjusted[start : start + len(c.pairs)]
        c._index = None
        start += len(c.pairs)
    for c in comparisons:
        _fill(c, alpha, higher_is_better)
    return int(np.sum(~np.isnan(np.asarray(all_p, dtype=float)))) if len(all_p) else 0


def _fill(c: Comparison, alpha: float, higher_is_better: bool) -> None:
    table = c.table
    for column in COMPARISON_COLUMNS[6:]:
        table[column] = np.nan
    table["tied_with_best"] = False
    if c.pairs is None or c.best is None:
        table.loc[table["arm"] == c.best, "tied_with_best"] = True
        return
    better = 1.0 if higher_is_better else -1.0
    beaten = []
    for i, name in table["arm"].items():
        base = table.at[i, "baseline"]
        vs_base = pair(c, name, base) if isinstance(base, str) else None
        if vs_base is not None:
            for key, column in (
                ("diff_mean", "diff_mean"),
                ("diff_ci_low", "diff_ci_low"),
                ("diff_ci_high", "diff_ci_high"),
                ("p_value", "p_value"),
                ("p_holm", "p_holm"),
            ):
                table.at[i, column] = vs_base[key]
        vs_best = pair(c, c.best, name)
        if vs_best is None:
            table.at[i, "tied_with_best"] = True
            continue
        table.at[i, "p_vs_best"] = vs_best["p_value"]
        table.at[i, "p_holm_vs_best"] = vs_best["p_holm"]
        significant = vs_best["p_holm"] < alpha and better * vs_best["diff_mean"] > 0
        table.at[i, "tied_with_best"] = not significant
        beaten.append(significant)
    c.tied = table.loc[table["tied_with_best"], "arm"].tolist()
    c.winner = c.best if beaten and all(beaten) else None


def friedman(means: pd.DataFrame, higher_is_better: bool = True, alpha: float = 0.05) -> dict | None:
    """Friedman's test over blocks (rows) x arms (columns) of mean scores, with average ranks (1 = best)
    and the Nemenyi critical difference of Demšar (2006). None when there are fewer than 3 arms or 2
    complete blocks."""
    complete = means.dropna()
    k, n = complete.shape[1], complete.shape[0]
    if k < 3 or n < 2:
        return None
    ranks = (-complete if higher_is_better else complete).rank(axis=1, method="average")
    statistic, p = stats.friedmanchisquare(*[complete[c].to_numpy() for c in complete.columns])
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return {
        "statistic": float(statistic),
        "p_value": float(p),
        "blocks": n,
        "arms": k,
        "avg_ranks": ranks.mean().sort_values().to_dict(),
        "critical_difference": float(q * math.sqrt(k * (k + 1) / (6.0 * n))),
    }
