"""Train / val / test samples from any `DataSource`: the class subset, the labelled budget and the seeded
stratified validation split (drawn from inside the budget unless `val_source=pool`, or k-fold over it),
and the duplicate check across splits. Numpy only: the same keys give the same split on every source."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferlab.core.errors import TransferlabError, did_you_mean
from transferlab.data.budget import check_val_source, cv_fold_mask, quotas
from transferlab.data.sources import DataSource

log = logging.getLogger(__name__)
Sample = tuple[Any, int]  # (key of the image in its source, label)


@dataclass
class SplitPlan:
    """The settings that decide which samples land in which split (the `dataset.*` keys)."""

    val_fraction: float = 0.2
    classes: Sequence[str] | None = None
    samples_per_class: int | None = None
    labels_total: int | None = None
    val_source: str = "budget"
    cv_folds: int | None = None
    cv_fold: int = 0
    seed: int = 0


@dataclass
class Splits:
    """What `plan_splits` decided: the class names (label = position), the training pool kept (the
    budget, validation included when drawn from it) with its validation mask `held`, a val split of the
    source (`val_from="folder"`, else empty), the test samples, and the classes the test split lacks."""

    class_names: list[str]
    pool: list[Sample]
    held: np.ndarray
    val: list[Sample]
    test: list[Sample]
    val_from: str
    test_missing_classes: list[str]

    def keys(self) -> list[Any]:
        """Every key to digest, in an order that does not depend on the seed's validation draw."""
        return [k for k, _ in self.pool + self.val + self.test]

    def assemble(self, digests: np.ndarray) -> tuple[dict[str, list[Sample]], dict[str, np.ndarray]]:
        """(samples, digest rows) per split, given the digest rows of `keys()` in order."""
        pool_digests, val_digests, test_digests = np.split(
            digests, [len(self.pool), len(self.pool) + len(self.val)]
        )
        held = self.held
        val = self.val
        if self.val_from != "folder":
            val, val_digests = [self.pool[i] for i in np.flatnonzero(held)], pool_digests[held]
        train = [self.pool[i] for i in np.flatnonzero(~held)]
        samples = {"train": train, "val": val, "test": self.test}
        return samples, {"train": pool_digests[~held], "val": val_digests, "test": test_digests}


def classes_of(source: DataSource, plan: SplitPlan) -> tuple[Mapping[str, Sequence[Any]], list[str]]:
    """Train's items and the class names chosen (`dataset.classes`, else every train class)."""
    train = _required(source, "train")
    available = list(train)
    if plan.classes is None:
        chosen = available
    else:
        missing = [c for c in plan.classes if c not in available]
        if missing:
            hint = did_you_mean(missing[0], available)
            raise TransferlabError(
                f"dataset.classes: {missing} not found in {source.where('train')}.{hint} Available: {available}."
            )
        chosen = list(plan.classes)
    if len(chosen) < 2:
        raise TransferlabError(
            f"{source.where('train')} gives {len(chosen)} class(es) {chosen}; a classifier needs at least 2: "
            "add class folders, or list at least two in dataset.classes."
        )
    return train, chosen


def plan_splits(source: DataSource, plan: SplitPlan, root: str) -> Splits:
    """The class subset, the budget and the validation mask for `source` (`root`: for messages)."""
    train, names = classes_of(source, plan)
    index = {c: i for i, c in enumerate(names)}
    pool = [(k, index[c]) for c in names for k in train[c]]
    test_classes = _required(source, "test")
    unknown = [c for c in test_classes if c not in train]
    if unknown:
        raise TransferlabError(
            f"Test classes {unknown} in {source.where('test')} are not in {source.where('train')}; "
            f"add them to train or remove them from test (train has {list(train)})."
        )
    test = [(k, index[c]) for c in names for k in test_classes.get(c, [])]
    missing = [c for c in names if not test_classes.get(c)]
    if missing:
        log.warning(
            "Test split %s has no images of class(es) %s: their test accuracy cannot be measured "
            "(recorded in results.json, data.test_missing_classes).",
            source.where("test"),
            missing,
        )
    val_classes = listing(source, "val")
    val = [(k, index[c]) for c in names for k in (val_classes or {}).get(c, [])]
    labels = np.fromiter((y for _, y in pool), np.int64, len(pool))
    budget = Budget(plan, names, root, source.where("train"))
    held, kept, val_from = budget.labelled(labels, from_folder=val_classes is not None)
    used = np.flatnonzero(held | kept)  # in listing order: the same items are digested whatever the seed
    return Splits(names, [pool[i] for i in used], held[used], val, test, val_from, missing)


def listing(source: DataSource, split: str) -> dict[str, Sequence[Any]] | None:
    """`source.items(split)` with its class names as text (a source may key its classes by numbers, as
    `dataset.classes` may name them), or None; anything but a mapping is one line naming the source."""
    found = source.items(split)
    if found is None:
        return None
    if not isinstance(found, Mapping):
        cls = type(source)
        raise TransferlabError(
            f"dataset.source: {cls.__module__}.{cls.__qualname__}.items({split!r}) returned a "
            f"{type(found).__name__}; return a mapping class name -> item keys, or None without that split."
        )
    return {str(name): keys for name, keys in found.items()}


def _required(source: DataSource, split: str) -> Mapping[str, Sequence[Any]]:
    found = listing(source, split)
    if found is None:
        raise TransferlabError(
            f"{source.where(split)} does not exist: dataset={source.name} needs a {split} split."
        )
    return found


class Budget:
    """The labelled budget and validation masks over the training pool's labels."""

    def __init__(self, plan: SplitPlan, class_names: list[str], root: str, train_where: str):
        self.plan, self.class_names, self.root, self.train_where = plan, class_names, root, train_where

    def labelled(self, labels: np.ndarray, from_folder: bool) -> tuple[np.ndarray, np.ndarray, str]:
        """(validation, labelled budget) masks and where validation comes from: inside the budget
        (`val_source=budget`), all training images (`pool`), or a val split of the source (`folder`)."""
        plan = self.plan
        val_from = "folder" if from_folder else check_val_source(plan.val_source)
        if plan.cv_folds is not None and val_from != "budget":
            raise TransferlabError(
                f"dataset.cv_folds={plan.cv_folds} cross-validates over the labelled budget, but validation comes "
                f"from {'the val/ folder' if from_folder else 'dataset.val_source=pool'}; use val_source=budget."
            )
        everything = np.ones(len(labels), bool)
        if from_folder:
            return ~everything, self.subsample(labels, everything), val_from
        if plan.val_source == "pool":
            held = self.hold_out(labels, everything)
            return held, self.subsample(labels, ~held), val_from
        kept = self.subsample(labels, everything)
        if plan.cv_folds is not None:  # k-fold cross-validation over the budget: fold cv_fold validates
            return cv_fold_mask(labels, kept, plan.cv_folds, plan.cv_fold, plan.seed), kept, val_from
        return self.hold_out(labels, kept), kept, val_from

    def hold_out(self, labels: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """The seeded stratified validation split, as a mask over `labels`: round(val_fraction x n) of
        each class's n images (at least one, and at least one left to train on), drawn at random.

        Numpy rather than scikit-learn's `train_test_split`, whose input checks alone (an entry-point
        scan per process) cost more than listing ten thousand files.
        """
        fraction = self.plan.val_fraction
        if not 0.0 < fraction < 1.0:
            raise TransferlabError(
                f"dataset.val_fraction={fraction} must be between 0 and 1 when {self.root} has no val/ folder."
            )
        rng = np.random.default_rng(self.plan.seed)
        held = np.zeros(len(labels), bool)
        for label, members in enumerate(members_of(labels, eligible, len(self.class_names))):
            name = self.class_names[label]
            if len(members) < 2 and not eligible.all():
                raise TransferlabError(
                    f"The labelled budget leaves {len(members)} image(s) of class {name!r} and "
                    "dataset.val_source=budget draws validation from inside it: give at least 2 per class "
                    "(dataset.samples_per_class / labels_total), or dataset.val_source=pool."
                )
            if len(members) < 2:
                raise TransferlabError(
                    f"Cannot hold out dataset.val_fraction={fraction} of class {name!r}: it has "
                    f"{len(members)} training image(s) in {self.train_where}; add images, or provide {self.root}/val/."
                )
            count = min(max(1, round(fraction * len(members))), len(members) - 1)
            held[rng.choice(members, count, replace=False)] = True
        return held

    def subsample(self, labels: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """The labelled images kept, as a mask: seeded draws per class among `eligible`, as many as the
        budget (`samples_per_class` or `labels_total`) gives each class."""
        classes = len(self.class_names)
        counts = np.bincount(labels[eligible], minlength=classes)
        quota = quotas(counts, self.plan.samples_per_class, self.plan.labels_total)
        if quota is None:
            return eligible
        rng = np.random.default_rng(self.plan.seed)
        kept, short = np.zeros(len(labels), bool), {}
        for label, members in enumerate(members_of(labels, eligible, classes)):
            if len(members) < quota[label]:
                short[self.class_names[label]] = len(members)
            kept[rng.choice(members, min(len(members), quota[label]), replace=False)] = True
        if short:
            log.warning(
                "dataset.samples_per_class=%d is more than %d class(es) have for training; all of their images are "
                "used (class: images): %s.",
                self.plan.samples_per_class,
                len(short),
                ", ".join(f"{c}: {n}" for c, n in short.items()),
            )
        return kept


def members_of(labels: np.ndarray, mask: np.ndarray, classes: int) -> list[np.ndarray]:
    """For each label 0..classes-1, the positions where `mask` holds and `labels` has it, in order."""
    at = np.flatnonzero(mask)
    at = at[np.argsort(labels[at], kind="stable")]
    return np.split(at, np.cumsum(np.bincount(labels[at], minlength=classes))[:-1])


def count_duplicates(digests: Mapping[str, np.ndarray]) -> int:
    """Images whose content appears in more than one split (data leakage), from content digests."""
    distinct = [np.unique(first_64_bits(d)) for d in digests.values()]  # a false match among n images
    # has probability n^2 / 2^65 (3e-8 for a million)
    _, splits_per_content = np.unique(np.concatenate(distinct), return_counts=True)
    shared = int((splits_per_content > 1).sum())
    if shared:
        log.warning(
            "%d image(s) appear (same content) in more than one of train/val/test: the test can measure "
            "memory, not transfer. Remove the copies (recorded in results.json, data.duplicates_across_splits).",
            shared,
        )
    return shared


def first_64_bits(digests: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest row as one integer (fast to sort and compare)."""
    return np.ascontiguousarray(digests[:, :8]).view(np.uint64).ravel()
