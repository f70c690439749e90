"""`DataModule`: one LightningDataModule for every data source (`transferlab.data.sources`).

The source lists and reads the items; this module does the rest once for all of them: the class
subset, the labelled budget and validation split (`transferlab.data.splits`), the split hashes and the
duplicate check (digests from the source, through the manifest for files), transforms and augmentation,
the seeded, resumable loaders, and what `results.json` records under `data`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from torch.utils.data import DataLoader

from transferlab.core.errors import TransferlabError
from transferlab.data.folders import to_rgb
from transferlab.data.loaders import ImageDataset, make_loader, resume_position, worker_context
from transferlab.data.manifest import Manifest
from transferlab.data.sources import DataSource, FileChecks, StreamingSource, pil_image
from transferlab.data.splits import SplitPlan, count_duplicates, plan_splits
from transferlab.data.transforms import Augment, eval_transform, tensor_transform, train_transform

log = logging.getLogger(__name__)
Sample = tuple[Any, int]


class DataModule(pl.LightningDataModule):
    """The images of `source` in train / val / test splits.

    Without a val split in the source, a seeded stratified `val_fraction` of train is held out. `classes`
    selects a subset (label = position in the list); `samples_per_class` (or `labels_total`) is the
    labelled budget: seeded images per class (in all), the validation split drawn from inside it unless
    `val_source="pool"` (see `transferlab.data.budget`). Normalization comes from the backbone's
    `data_config` unless `mean`/`std` are set. `root`: recorded as `data.root` when the source has none.
    """

    source_type: ClassVar[type[DataSource]] = (
        DataSource  # what a thin constructor builds (the pre-flight reads it)
    )

    def __init__(
        self,
        source: DataSource | None = None,
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
        name: str | None = None,
        root: str | None = None,
    ):
        super().__init__()
        self.source = _checked(source)
        self.root = Path(str(source.root)) if source.root is not None else root
        self.name = name or source.name
        self.image_size, self.batch_size = int(image_size), int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.seed = int(seed)
        budget = (samples_per_class, labels_total, val_source, cv_folds, cv_fold)
        chosen = [str(c) for c in classes] if classes is not None else None
        self.plan = SplitPlan(float(val_fraction), chosen, *budget, seed=self.seed)
        self.augment = augment if isinstance(augment, Augment) else Augment(**dict(augment or {}))
        self.mean, self.std = normalization(mean, std, data_config)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        context = worker_context(multiprocessing_context) if self.num_workers > 0 else None
        self.multiprocessing_context = context
        self.verify, self.hash, self.recheck = verify, hash, recheck
        manifest = Manifest(Path(str(source.root)), manifest_dir) if source.root is not None else None
        self.checks = FileChecks(manifest, verify, hash, recheck)
        self.decoder = decoder  # pil | torchvision (torchvision.io + transforms.v2 on uint8 tensors)
        self._unset()

    def _unset(self) -> None:
        """What `setup` decides, not decided yet."""
        self.splits: dict[str, list[Sample]] = {}
        self.class_names: list[str] = []
        self.test_missing_classes: list[str] = []
        self.duplicates_across_splits: int | None = None
        self.val_from = ""
        self._digests: dict[str, np.ndarray] = {}  # split -> a digest row per sample
        self._split_hashes: dict[str, str] = {}

    @property
    def manifest(self) -> Manifest | None:
        """The file manifest of the source's root (None for a source without one)."""
        return self.checks.manifest

    # ----------------------------------------------------------------- set-up
    def prepare_root(self) -> None:
        """Open or write the data before it is listed: the source's `prepare`."""
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_root()
        decided = plan_splits(self.source, self.plan, str(self.root or self.name))
        self.class_names, self.val_from = decided.class_names, decided.val_from
        self.test_missing_classes = decided.test_missing_classes
        self.splits, self._digests = decided.assemble(self.source.digests(decided.keys(), self.checks))
        self.duplicates_across_splits = count_duplicates(self._digests) if self.hash == "content" else None
        sizes = {k: len(v) for k, v in self.splits.items()}
        log.info(
            "Data %s: %d classes, train %d, val %d, test %d images",
            self.root,
            len(self.class_names),
            sizes["train"],
            sizes["val"],
            sizes["test"],
        )

    # ----------------------------------------------------------------- the source, for callers
    def read(self, key: Any) -> Image.Image:
        """One item of the source as an RGB image."""
        return ReadRGB(self.source)(key)

    def where(self, split: str) -> str:
        """Where a split lives, for messages."""
        return self.source.where(split)

    def relative(self, key: Any) -> str:
        """The key as it enters the split hash."""
        return self.source.relative(key)

    # ----------------------------------------------------------------- access
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def transform(self, split: str, augment: bool = True):
        train = split == "train" and augment
        if self.decoder == "torchvision":
            return tensor_transform(self.image_size, self.mean, self.std, self.augment if train else None)
        if train:
            return train_transform(self.image_size, self.mean, self.std, self.augment)
        return eval_transform(self.image_size, self.mean, self.std)

    def dataset(self, split: str, augment: bool = True):
        """The (image tensor, label) dataset of `split` (a stream for a `StreamingSource`)."""
        self.setup()
        transform = self.transform(split, augment)
        if isinstance(self.source, StreamingSource):
            shuffle = split == "train" and augment
            return self.source.stream(split, self.splits[split], transform, self.seed, shuffle)
        return ImageDataset(
            self.splits[split], transform, ReadRGB(self.source, self.decoder == "torchvision")
        )

    def _loader(self, split: str, shuffle: bool, augment: bool = True) -> DataLoader:
        position = resume_position(self.trainer) if shuffle else (0, 0)
        settings = {
            "batch_size": self.batch_size if split == "train" else self.eval_batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "multiprocessing_context": self.multiprocessing_context,
        }
        if isinstance(self.source, StreamingSource):
            stream = self.dataset(split, augment and shuffle)
            return self.source.loader(stream, position if shuffle else None, seed=self.seed, **settings)
        dataset = self.dataset(split, augment)
        return make_loader(dataset, shuffle=shuffle, seed=self.seed, position=position, **settings)

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
        """sha256 over the split's item list (relative names), labels and digests (file contents, or
        size and mtime with dataset.hash=stat); computed once per split."""
        if split not in self._split_hashes:
            digest = hashlib.sha256()
            digest.update("\n".join(f"{self.relative(k)}|{y}" for k, y in self.splits[split]).encode())
            digest.update(np.ascontiguousarray(self._digests[split]).tobytes())
            self._split_hashes[split] = digest.hexdigest()
        return self._split_hashes[split]

    def describe(self) -> dict[str, Any]:
        """What the results record about the data (the source adds its own fields last)."""
        return {
            "name": self.name,
            "root": str(self.root) if self.root is not None else None,
            "class_names": self.class_names,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            # every label the run saw: training plus validation (budget: the validation came out of it)
            "labels_used": len(self.splits["train"]) + len(self.splits["val"]),
            "val_source": self.val_from,
            "cv": {"folds": self.plan.cv_folds, "fold": self.plan.cv_fold}
            if self.plan.cv_folds is not None
            else None,
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
            **self.source.describe(),
        }


def normalization(mean, std, data_config: dict[str, Any] | None) -> tuple[tuple, tuple]:
    """(mean, std): as given, else the backbone's `data_config`, else 0.5 per channel."""
    config = {"mean": (0.5,) * 3, "std": (0.5,) * 3, **dict(data_config or {})}
    return tuple(config["mean"] if mean is None else mean), tuple(config["std"] if std is None else std)


def _checked(source: Any) -> DataSource:
    if not isinstance(source, DataSource):
        name = type(source).__name__ if source is not None else "null"
        raise TransferlabError(
            f"dataset.source={name} is not a transferlab.data.sources.DataSource; give dataset.source._target_ "
            "a class implementing items() and read()."
        )
    return source


class ReadRGB:
    """A source's `read` as the transforms take it: an RGB PIL image (a grayscale, palette, RGBA or
    16-bit one converted as image files are, `folders.to_rgb`), or one line naming the source when it returns something else. `tensors`: its
    `read_tensor` (`dataset.decoder=torchvision`), whose uint8 tensors pass as they are."""

    def __init__(self, source: DataSource, tensors: bool = False):
        self.source, self.tensors = source, tensors

    def __call__(self, key: Any) -> Any:
        image = (self.source.read_tensor if self.tensors else self.source.read)(key)
        if self.tensors and not isinstance(image, Image.Image):
            return image
        image = pil_image(self.source, key, image)
        return image if image.mode == "RGB" else to_rgb(image, key)
