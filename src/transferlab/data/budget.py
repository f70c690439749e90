"""The labelled budget of a low-label run: how many labelled images each class keeps, and where the
validation images come from.

With `dataset.val_source=budget` (the default) `samples_per_class` (or `labels_total`) is every label
the run sees: the validation split is drawn from inside it, so `labels_used` is the budget (Oliver et
al. 2018: a validation set from outside the budget voids a low-label claim). `pool` is the old
behaviour: validation held out of all training images first, then the training images subsampled.
"""

from __future__ import annotations

import numpy as np

from transferlab.core.errors import TransferlabError

VAL_SOURCES = ("budget", "pool")


def check_val_source(value: str) -> str:
    if value not in VAL_SOURCES:
        raise TransferlabError(
            f"dataset.val_source={value} is not one of {', '.join(VAL_SOURCES)}: budget draws validation from "
            "inside samples_per_class / labels_total (every label counted), pool holds it out of all training "
            "images first (the old behaviour)."
        )
    return value


def quotas(counts: np.ndarray, samples_per_class: int | None, labels_total: int | None) -> np.ndarray | None:
    """Labelled images to keep per class (None = all): `samples_per_class` each, or `labels_total` shared
    in proportion to the classes' sizes (largest remainders, at least one per class)."""
    if samples_per_class is not None and labels_total is not None:
        raise TransferlabError(
            f"dataset.samples_per_class={samples_per_class} and dataset.labels_total={labels_total} are both set; "
            "give one budget: per class, or in all."
        )
    if samples_per_class is not None:
        if int(samples_per_class) < 1:
            raise TransferlabError(
                f"dataset.samples_per_class={samples_per_class} must be at least 1, or null for all images."
            )
        return np.full(len(counts), int(samples_per_class))
    if labels_total is None:
        return None
    total, classes = int(labels_total), len(counts)
    if total < classes:
        raise TransferlabError(
            f"dataset.labels_total={labels_total} is less than the {classes} classes; give at least one label per "
            "class (two with dataset.val_source=budget)."
        )
    total = min(total, int(counts.sum()))
    share = counts / counts.sum() * total
    quota = np.maximum(1, np.floor(share)).astype(np.int64)
    while quota.sum() > total:  # the at-least-one rule overshot: take from the largest
        quota[np.argmax(quota)] -= 1
    for label in np.argsort(-(share - np.floor(share)), kind="stable"):
        if quota.sum() >= total:
            break
        quota[label] += 1
    return np.minimum(quota, counts)


ALL_TRAIN = -1  # dataset.cv_fold=-1: no fold validates (the final run after cross-validated tuning)


def cv_fold_mask(labels: np.ndarray, budget: np.ndarray, folds: int, fold: int, seed: int) -> np.ndarray:
    """The validation mask of fold `fold` of `folds` over the labelled `budget`: each class's images,
    shuffled with `seed`, dealt round-robin to the folds, so every labelled image validates in exactly
    one fold and no fold shares an image between its training and validation sides. `fold=ALL_TRAIN`
    (the final run after cross-validated tuning) validates on nothing: the whole budget trains."""
    if int(fold) == ALL_TRAIN and int(folds) >= 2:
        return np.zeros(len(labels), bool)
    if int(folds) < 2 or not 0 <= int(fold) < int(folds):
        raise TransferlabError(
            f"dataset.cv_folds={folds}, dataset.cv_fold={fold}: need cv_folds >= 2 and 0 <= cv_fold < cv_folds "
            "(or cv_fold=-1: no fold validates, the whole budget trains)."
        )
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), bool)
    for label in np.unique(labels[budget]):
        members = rng.permutation(np.flatnonzero(budget & (labels == label)))
        if len(members) < 2:
            raise TransferlabError(
                f"dataset.cv_folds={folds}: class {label} has {len(members)} labelled image(s); each class needs "
                "at least 2 (one to train on in every fold)."
            )
        held[members[np.arange(len(members)) % int(folds) == int(fold)]] = True
    return held
