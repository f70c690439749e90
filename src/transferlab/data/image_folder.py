"""`ImageFolderDataModule`: the Keras `flow_from_directory` layout, ROOT/{train,val,test}/<class>/*."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from transferlab.core.errors import TransferlabError, did_you_mean
from transferlab.data.budget import check_val_source, cv_fold_mask, quotas
from transferlab.data.loaders import make_loader, resume_position
from transferlab.data.manifest import Manifest
from transferlab.data.transforms import (
    Augment,
    decode_file,
    eval_transform,
    tensor_transform,
    train_transform,
)

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
Sample = tuple[Any, int]  # (key of the image in its source, label); a file path for image folders


class ImageDataset(Dataset):
    """(key, label) samples, each image read by `read(key)` as RGB (grayscale becomes 3 channels)."""

    def __init__(self, samples: Sequence[Sample], transform, read: Callable[[Any], Image.Image]):
        self.samples = list(samples)
        self.transform = transform
        self.read = read

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        key, label = self.samples[index]
        return self.transform(self.read(key)), label


def read_file(path: Path) -> Image.Image:
    """An image file as RGB; an unreadable file is named in the error."""
    try:
        with Image.open(path) as im:
            return to_rgb(im, path)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise TransferlabError(f"Cannot read image {path}: {exc}. Remove or replace the file.") from None


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # 16-bit, 32-bit integer, 32-bit float pixels


def to_rgb(image: Image.Image, path: Any = "") -> Image.Image:
    """`image` as 8-bit RGB. PIL's own `convert` clips 16/32-bit and float pixels (a 16-bit PNG becomes
    almost all white): those are rescaled from their range (16-bit: 0-65535; float: 0-1 or 0-255) instead,
    and values outside every known range are refused, naming the file."""
    if image.mode not in WIDE_MODES:
        return image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scale = 255 / 65535
    elif image.mode == "F" and low >= 0 and high <= 1:
        scale = 255.0
    elif low >= 0 and high <= 255 and image.mode == "F":
        scale = 1.0
    elif low >= 0 and high <= 65535:  # 32-bit integer pixels holding 16-bit values (PNG, TIFF)
        scale = 255 / 65535
    else:
        raise ValueError(
            f"{image.mode} pixels range from {low:g} to {high:g}, outside 0-1, 0-255 and 0-65535: convert the "
            "file to 8 or 16 bits per channel"
        )
    gray = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def in_loky_worker() -> bool:
    """Whether this process is a joblib (loky) worker, as `hydra/launcher=local` jobs are."""
    return multiprocessing.current_process().name.startswith("LokyProcess")


def _worker_context(requested: str | None) -> str | None:
    """DataLoader workers inside a joblib (loky) job crash unless forked (hydra #964, joblib #1104)."""
    if requested is None and in_loky_worker():
        return "fork"
    return requested


def scan_class_folders(split_dir: Path) -> dict[str, list[str]]:
    """Class name -> sorted image file paths of one split directory (subfolders included); an empty
    class folder is an error. One `scandir` per folder: no per-file system call."""
    with os.scandir(split_dir) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not _hidden(e.name))
    if not classes:
        raise TransferlabError(
            f"{split_dir} has no class folders; expected {split_dir}/<class>/<image> (one folder per class)."
        )
    found, skipped = {}, []
    for name in classes:
        files = sorted(files_under(os.path.join(split_dir, name), IMG_EXTENSIONS, skipped))
        if not files:
            raise TransferlabError(
                f"Class folder {split_dir / name} has no images ({', '.join(IMG_EXTENSIONS)}); add images or "
                "remove the folder."
            )
        found[name] = files
    if skipped:
        log.info(
            "%s: skipped %d hidden file(s) or folder(s) (names starting with '.', e.g. macOS '._' files), "
            "as file browsers hide them: %s",
            split_dir,
            len(skipped),
            ", ".join(os.path.basename(p) for p in skipped[:3]),
        )
    return found


def _hidden(name: str) -> bool:
    """What file browsers hide (dot files, macOS AppleDouble '._x' files) and zip tools' '__MACOSX'."""
    return name.startswith(".") or name == "__MACOSX"


def files_under(
    directory: str | os.PathLike, suffixes: tuple[str, ...] | None = None, skipped: list[str] | None = None
) -> list[str]:
    """Regular files under `directory` (subfolders included), those ending in `suffixes` (any case) if
    given; one `scandir` per folder. Hidden files and folders (`_hidden`) are skipped (and appended to
    `skipped`); a folder reached twice through symbolic links (a loop) is walked once."""
    files, folders = [], [str(directory)]
    seen: set[tuple[int, int]] = set()
    while folders:
        folder = folders.pop()
        try:
            stat = os.stat(folder)
        except OSError as exc:  # a dangling link or a loop the OS refuses to follow
            raise TransferlabError(
                f"Cannot open folder {folder} ({exc.strerror}); fix or remove the symbolic link."
            ) from None
        if (stat.st_dev, stat.st_ino) in seen:
            log.warning("Symbolic link loop: %s is already listed; not following it again.", folder)
            continue
        seen.add((stat.st_dev, stat.st_ino))
        with os.scandir(folder) as entries:
            for entry in entries:  # the name first: no call to is_dir for the (many) images
                if _hidden(entry.name):
                    if skipped is not None:
                        skipped.append(entry.path)
                    continue
                if (suffixes is None or entry.name.lower().endswith(suffixes)) and entry.is_file():
                    files.append(entry.path)
                elif entry.is_dir():
                    folders.append(entry.path)
    return files


class ImageFolderDataModule(pl.LightningDataModule):
    """Images in ROOT/train/<class>/*, ROOT/test/<class>/* and optional ROOT/val/<class>/*.

    Without `val/`, a seeded stratified `val_fraction` of train is held out. `classes` selects a subset
    (label = position in the list); `samples_per_class` (or `labels_total`) is the labelled budget:
    seeded images per class (in all), the validation split drawn from inside it unless
    `val_source="pool"` (see `transferlab.data.budget`).
    Normalization comes from the backbone's `data_config` unless `mean`/`std` are set.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.2,
        classes: Sequence[Any] | None = None,
        samples_per_class: int | None = None,
        labels_total: int | None = None,
        val_source: str = "budget",
        cv_folds: int | None = None,
        cv_fold: int = 0,
        augment: dict[str, Any] | Augment | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        multiprocessing_context: str | None = None,
        verify: str = "full",
        hash: str = "content",
        recheck: str = "files",
        manifest_dir: str | None = None,
        decoder: str = "pil",
        seed: int = 0,
        data_config: dict[str, Any] | None = None,
        name: str = "image_folder",
    ):
        super().__init__()
        self.root = Path(str(root)).expanduser()
        if self.root.exists():
            self.root = self.root.resolve()  # file keys are absolute: the manifest finds them without relpath
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.val_fraction = float(val_fraction)
        self.requested_classes = [str(c) for c in classes] if classes is not None else None
        self.samples_per_class = samples_per_class
        self.labels_total, self.val_source, self.cv = labels_total, val_source, (cv_folds, cv_fold)
        self.augment = augment if isinstance(augment, Augment) else Augment(**dict(augment or {}))
        config = dict(data_config or {})
        self.mean = tuple(mean if mean is not None else config.get("mean", (0.5, 0.5, 0.5)))
        self.std = tuple(std if std is not None else config.get("std", (0.5, 0.5, 0.5)))
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.multiprocessing_context = (
            _worker_context(multiprocessing_context) if self.num_workers > 0 else None
        )
        self.verify, self.hash, self.recheck = verify, hash, recheck
        self.manifest = Manifest(self.root, manifest_dir)
        self.decoder = decoder  # pil | torchvision (torchvision.io + transforms.v2 on uint8 tensors)
        self.seed, self.name = int(seed), name
        self.splits: dict[str, list[Sample]] = {}
        self.class_names: list[str] = []
        self.test_missing_classes: list[str] = []
        self.duplicates_across_splits: int | None = None
        self._digests: dict[str, np.ndarray] = {}  # split -> a digest row per sample
        self._split_hashes: dict[str, str] = {}

    # ----------------------------------------------------------------- set-up
    def prepare_root(self) -> None:
        """Hook for data modules that materialize their folder first (e.g. digits)."""

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_root()
        train = self.scan("train", required=True)
        self.class_names = self._select_classes(list(train), self.where("train"))
        if len(self.class_names) < 2:
            raise TransferlabError(
                f"{self.where('train')} gives {len(self.class_names)} class(es) {self.class_names}; a classifier needs "
                "at least 2: add class folders, or list at least two in dataset.classes."
            )
        index = {c: i for i, c in enumerate(self.class_names)}
        pool = [(k, index[c]) for c in self.class_names for k in train[c]]

        test_classes = self.scan("test", required=True)
        unknown = [c for c in test_classes if c not in train]
        if unknown:
            raise TransferlabError(
                f"Test classes {unknown} in {self.where('test')} are not in {self.where('train')}; "
                f"add them to train or remove them from test (train has {list(train)})."
            )
        test = [(k, index[c]) for c in self.class_names for k in test_classes.get(c, [])]
        self.test_missing_classes = [c for c in self.class_names if not test_classes.get(c)]
        if self.test_missing_classes:
            log.warning(
                "Test split %s has no images of class(es) %s: their test accuracy cannot be measured "
                "(recorded in results.json, data.test_missing_classes).",
                self.where("test"),
                self.test_missing_classes,
            )

        labels = np.fromiter((y for _, y in pool), np.int64, len(pool))
        val_classes = self.scan("val", required=False)
        val = [(k, index[c]) for c in self.class_names for k in (val_classes or {}).get(c, [])]
        held, kept = self._labelled(labels, from_folder=val_classes is not None)
        used = np.flatnonzero(held | kept)  # in scan order: the same files
        pool, held = [pool[i] for i in used], held[used]  # are asked of the manifest whatever the seed
        digests = self.digests([k for k, _ in pool + val + test])
        pool_digests, val_digests, test_digests = np.split(digests, [len(pool), len(pool) + len(val)])
        if val_classes is None:
            val, val_digests = [pool[i] for i in np.flatnonzero(held)], pool_digests[held]
        train_samples = [pool[i] for i in np.flatnonzero(~held)]
        self.splits = {"train": train_samples, "val": val, "test": test}
        self._digests = {"train": pool_digests[~held], "val": val_digests, "test": test_digests}
        self.duplicates_across_splits = self._count_duplicates_across_splits()
        log.info(
            "Data %s: %d classes, train %d, val %d, test %d images",
            self.root,
            len(self.class_names),
            len(train_samples),
            len(val),
            len(test),
        )

    # The image source: image folders here; other formats (Hugging Face datasets) override these four.
    def scan(self, split: str, required: bool) -> dict[str, list[Any]] | None:
        """Class name -> image keys of `split` (None when an optional split is absent)."""
        if not required and not (self.root / split).is_dir():
            return None
        return scan_class_folders(self._require_split_dir(split))

    def where(self, split: str) -> str:
        """Where a split lives, for messages."""
        return str(self.root / split)

    def read(self, key: Any) -> Image.Image:
        return read_file(key)

    def read_tensor(self, key: Any) -> Any:
        """What `dataset.decoder=torchvision` reads: files through torchvision.io; a source with its own
        `read` (Hugging Face) gives its PIL image, which the tensor transform converts."""
        if type(self).read is not ImageFolderDataModule.read:
            return self.read(key)
        return decode_file(key, fallback=read_file)

    def digests(self, keys: list[Any]) -> np.ndarray:
        """A digest row per image, in order (uint8: the content's sha256, or size and mtime), from the
        manifest: only changes are read."""
        return self.manifest.digests(keys, self.verify, self.hash, self.recheck)

    def relative(self, key: Any) -> str:
        """The key as it enters the split hash (independent of where the dataset is mounted)."""
        return key[len(str(self.root)) + 1 :]

    def _require_split_dir(self, split: str) -> Path:
        if not self.root.is_dir():
            raise TransferlabError(
                f"dataset.root={self.root} does not exist; set dataset.root to a folder with "
                "train/<class>/* and test/<class>/* images."
            )
        path = self.root / split
        if not path.is_dir():
            raise TransferlabError(
                f"dataset.root={self.root} has no {split}/ folder; expected {self.root}/{split}/<class>/<image> "
                "(Keras flow_from_directory layout)."
            )
        return path

    def _select_classes(self, available: list[str], train_dir: str) -> list[str]:
        if self.requested_classes is None:
            return available
        missing = [c for c in self.requested_classes if c not in available]
        if missing:
            hint = did_you_mean(missing[0], available)
            raise TransferlabError(
                f"dataset.classes: {missing} not found in {train_dir}.{hint} Available: {available}."
            )
        return list(self.requested_classes)

    def _labelled(self, labels: np.ndarray, from_folder: bool) -> tuple[np.ndarray, np.ndarray]:
        """(validation, labelled budget) masks over the training pool: validation from inside the
        budget (`val_source=budget`), from all training images (`pool`), or none (a val/ folder)."""
        self.val_from = "folder" if from_folder else check_val_source(self.val_source)
        if self.cv[0] is not None and self.val_from != "budget":
            raise TransferlabError(
                f"dataset.cv_folds={self.cv[0]} cross-validates over the labelled budget, but validation comes "
                f"from {'the val/ folder' if from_folder else 'dataset.val_source=pool'}; use val_source=budget."
            )
        everything = np.ones(len(labels), bool)
        if from_folder:
            return ~everything, self._subsample(labels, everything)
        if self.val_source == "pool":
            held = self._hold_out(labels, everything)
            return held, self._subsample(labels, ~held)
        kept = self._subsample(labels, everything)
        if self.cv[0] is not None:  # k-fold cross-validation over the budget: fold cv_fold validates
            return cv_fold_mask(labels, kept, *self.cv, self.seed), kept
        return self._hold_out(labels, kept), kept

    def _hold_out(self, labels: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """The seeded stratified validation split, as a mask over `labels`: round(val_fraction x n) of
        each class's n images (at least one, and at least one left to train on), drawn at random.

        Numpy rather than scikit-learn's `train_test_split`, whose input checks alone (an entry-point
        scan per process) cost more than listing ten thousand files.
        """
        if not 0.0 < self.val_fraction < 1.0:
            raise TransferlabError(
                f"dataset.val_fraction={self.val_fraction} must be between 0 and 1 when {self.root} has no val/ folder."
            )
        rng = np.random.default_rng(self.seed)
        held = np.zeros(len(labels), bool)
        for label, members in enumerate(_members(labels, eligible, self.num_classes)):
            if len(members) < 2 and not eligible.all():
                raise TransferlabError(
                    f"The labelled budget leaves {len(members)} image(s) of class {self.class_names[label]!r} and "
                    "dataset.val_source=budget draws validation from inside it: give at least 2 per class "
                    "(dataset.samples_per_class / labels_total), or dataset.val_source=pool."
                )
            if len(members) < 2:
                raise TransferlabError(
                    f"Cannot hold out dataset.val_fraction={self.val_fraction} of class {self.class_names[label]!r}: "
                    f"it has {len(members)} training image(s) in {self.where('train')}; add images, or provide "
                    f"{self.root}/val/."
                )
            count = min(max(1, round(self.val_fraction * len(members))), len(members) - 1)
            held[rng.choice(members, count, replace=False)] = True
        return held

    def _subsample(self, labels: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """The labelled images kept, as a mask: seeded draws per class among `eligible`, as many as the
        budget (`samples_per_class` or `labels_total`) gives each class."""
        counts = np.bincount(labels[eligible], minlength=self.num_classes)
        quota = quotas(counts, self.samples_per_class, self.labels_total)
        if quota is None:
            return eligible
        rng = np.random.default_rng(self.seed)
        kept, short = np.zeros(len(labels), bool), {}
        for label, members in enumerate(_members(labels, eligible, self.num_classes)):
            if len(members) < quota[label]:
                short[self.class_names[label]] = len(members)
            kept[rng.choice(members, min(len(members), quota[label]), replace=False)] = True
        if short:
            log.warning(
                "dataset.samples_per_class=%d is more than %d class(es) have for training; all of their images are "
                "used (class: images): %s.",
                self.samples_per_class,
                len(short),
                ", ".join(f"{c}: {n}" for c, n in short.items()),
            )
        return kept

    def _count_duplicates_across_splits(self) -> int | None:
        """Images whose content appears in more than one of train/val/test (data leakage); None without
        content hashes (dataset.hash=stat)."""
        if self.hash != "content":
            return None
        distinct = [np.unique(_first_64_bits(d)) for d in self._digests.values()]  # a false match among
        # n images has probability n^2 / 2^65 (3e-8 for a million)
        _, splits_per_content = np.unique(np.concatenate(distinct), return_counts=True)
        shared = int((splits_per_content > 1).sum())
        if shared:
            log.warning(
                "%d image(s) appear (same content) in more than one of train/val/test: the test can measure "
                "memory, not transfer. Remove the copies (recorded in results.json, data.duplicates_across_splits).",
                shared,
            )
        return shared

    # ----------------------------------------------------------------- access
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def transform(self, split: str, augment: bool = True):
        if self.decoder == "torchvision":
            train = split == "train" and augment
            return tensor_transform(self.image_size, self.mean, self.std, self.augment if train else None)
        if split == "train" and augment:
            return train_transform(self.image_size, self.mean, self.std, self.augment)
        return eval_transform(self.image_size, self.mean, self.std)

    def dataset(self, split: str, augment: bool = True) -> ImageDataset:
        self.setup()
        read = self.read_tensor if self.decoder == "torchvision" else self.read
        return ImageDataset(self.splits[split], self.transform(split, augment), read)

    def _loader(self, split: str, shuffle: bool, augment: bool = True) -> DataLoader:
        return make_loader(
            self.dataset(split, augment),
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            seed=self.seed,
            position=resume_position(self.trainer) if shuffle else (0, 0),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            multiprocessing_context=self.multiprocessing_context,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def eval_dataloader(self, split: str) -> DataLoader:
        """A deterministic loader over any split (evaluation transform, no shuffling)."""
        return self._loader(split, shuffle=False, augment=False)

    def split_hash(self, split: str) -> str:
        """sha256 over the split's file list (relative paths), labels and file contents (or size and
        mtime with dataset.hash=stat); computed once per split."""
        if split not in self._split_hashes:
            digest = hashlib.sha256()
            digest.update("\n".join(f"{self.relative(k)}|{y}" for k, y in self.splits[split]).encode())
            digest.update(np.ascontiguousarray(self._digests[split]).tobytes())
            self._split_hashes[split] = digest.hexdigest()
        return self._split_hashes[split]

    def describe(self) -> dict[str, Any]:
        """What the results record about the data."""
        return {
            "name": self.name,
            "root": str(self.root),
            "class_names": self.class_names,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            # every label the run saw: training plus validation (budget: the validation came out of it)
            "labels_used": len(self.splits["train"]) + len(self.splits["val"]),
            "val_source": self.val_from,
            "cv": {"folds": self.cv[0], "fold": self.cv[1]} if self.cv[0] is not None else None,
            "split_sha256": {k: self.split_hash(k) for k in self.splits},
            "image_size": self.image_size,
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "augment": self.augment.__dict__ | {"zoom": list(self.augment.zoom)},
            "hash": self.hash,
            "verify": self.verify,
            "recheck": self.recheck,
            "decoder": self.decoder,
            "test_missing_classes": self.test_missing_classes,
            "duplicates_across_splits": self.duplicates_across_splits,
        }


def _members(labels: np.ndarray, mask: np.ndarray, classes: int) -> list[np.ndarray]:
    """For each label 0..classes-1, the positions where `mask` holds and `labels` has it, in order."""
    at = np.flatnonzero(mask)
    at = at[np.argsort(labels[at], kind="stable")]
    return np.split(at, np.cumsum(np.bincount(labels[at], minlength=classes))[:-1])


def _first_64_bits(digests: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest row as one integer (fast to sort and compare)."""
    return np.ascontiguousarray(digests[:, :8]).view(np.uint64).ravel()


def digest_rows(digests: Iterable[bytes], width: int = 32) -> np.ndarray:
    """Digests of `width` bytes each (given one by one or joined) as the rows of a uint8 array (what
    `digests` returns)."""
    return np.frombuffer(b"".join(digests), np.uint8).reshape(-1, width)
