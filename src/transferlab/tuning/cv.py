"""`tuning.cv_folds=k`: every trial is k jobs, one per fold of the labelled budget
(`dataset.cv_folds=k dataset.cv_fold=i`), and its objective is the mean over its folds; a trial fails
if one of its folds fails. Folds of one trial never prune (they would report to one trial in turn).
The final runs then train on all of the budget (`dataset.cv_fold=-1`: no validation images), so they
test the last epoch's weights, fit no temperature (calibration needs validation) and a closed-form
probe chooses its L2 by cross-validation on the training images."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from transferlab.core.errors import TransferlabError
from transferlab.data.budget import ALL_TRAIN


def cv_folds(config: Any) -> int | None:
    """`tuning.cv_folds` of the sweep's config (None = one validation split per trial)."""
    k = (config.get("tuning") or {}).get("cv_folds")
    if k is None:
        return None
    if int(k) < 2:
        raise TransferlabError(f"tuning.cv_folds={k} must be at least 2 (or null for one validation split).")
    return int(k)


def fold_jobs(overrides: list[str], k: int) -> list[list[str]]:
    """The k jobs of one trial: its overrides, one fold each, pruning off."""
    base = [o for o in overrides if not o.startswith("tuning.prune=")]
    return [[*base, "tuning.prune=false", f"dataset.cv_folds={k}", f"dataset.cv_fold={i}"] for i in range(k)]


def final_overrides(config: Any) -> list[str]:
    """What a final run adds under `tuning.cv_folds`: the whole budget trains, nothing validates."""
    k = cv_folds(config)
    if k is None:
        return []
    return [f"dataset.cv_folds={k}", f"dataset.cv_fold={ALL_TRAIN}", "calibration.enabled=false"]


def fold_outcome(
    outcomes: list[tuple[TrialState, float | None, str]],
) -> tuple[TrialState, float | None, str]:
    """One trial's (state, value, error) from its folds': the mean objective when all completed."""
    for state, _, error in outcomes:
        if state == TrialState.FAIL:
            return TrialState.FAIL, None, error
    if any(state == TrialState.PRUNED for state, _, _ in outcomes):
        return TrialState.PRUNED, None, ""
    values = [float(v) for _, v, _ in outcomes]
    return TrialState.COMPLETE, sum(values) / len(values), ""
