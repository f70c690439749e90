"""Data sources: where the images and labels of a dataset come from, behind three small methods.

A source lists the items of each split with their class (`items`), reads one item as an image (`read`)
and describes itself for `results.json` (`name`, `root`, `describe`). Everything else — class
subsets, `samples_per_class` / `labels_total`, the validation split (`val_source`, `cv_folds`),
augmentation and transforms, the split hashes and duplicate check, the loaders — is done once by
`transferlab.data.DataModule`, which takes any source. Image folders, the embedded digits and Hugging
Face datasets are sources; WebDataset shards are a `StreamingSource` (read in order, not one by one).

Adding a data source takes two files and no edit of the package:

1. A class implementing `DataSource` (at least `items` and `read`) in your own module::

       class ArraySource(DataSource):
           name = "arrays"

           def __init__(self, count: int = 20):
               self.data = make_arrays(count)  # {"train": [(uint8 array, class name), ...], "test": ...}

           def items(self, split):
               if split not in self.data:
                   return None  # "val" is optional: the shared module then holds validation out of train
               found = {}
               for i, (_, label) in enumerate(self.data[split]):
                   found.setdefault(label, []).append((split, i))
               return found

           def read(self, key):
               split, i = key
               return PIL.Image.fromarray(self.data[split][i][0]).convert("RGB")

2. A dataset config (`conf/dataset/arrays.yaml`, or `DIR/dataset/arrays.yaml` with `--config-dir DIR`)
   that extends `image_folder` (every shared setting, e.g. `samples_per_class`, keeps working)::

       defaults:
         - image_folder
         - _self_
       _target_: transferlab.data.DataModule
       name: arrays
       root: null
       source:
         _target_: mypkg.ArraySource
         count: 20

Then `python -m transferlab.train dataset=arrays dataset.samples_per_class=5 ...`.

This module imports no torch: the pre-flight and the config schema read a source's declarations cheaply.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from transferlab.core.errors import TransferlabError
from transferlab.data.manifest import Manifest

if TYPE_CHECKING:
    from PIL import Image
    from torch.utils.data import DataLoader, IterableDataset

Key = Any  # what identifies one item inside its source: hashable and picklable (a path, a (split, row))
SPLITS = ("train", "val", "test")


@dataclass
class FileChecks:
    """How the files behind a source are verified and remembered (`dataset.verify`, `dataset.hash`,
    `dataset.recheck`, `dataset.manifest_dir`), given to `DataSource.digests`; `manifest` is None for a
    source with no folder of its own."""

    manifest: Manifest | None
    verify: str = "full"
    hash: str = "content"
    recheck: str = "files"

    def digests(self, files: Sequence[str]) -> np.ndarray:
        """One digest row per file from the manifest (only changed files are read)."""
        if self.manifest is None:
            raise TransferlabError("This data source has no root folder, so it has no file manifest.")
        return self.manifest.digests(files, self.verify, self.hash, self.recheck)


class DataSource(ABC):
    """Images and their class names, split into train, optional val, and test (see the module docstring).

    Required: `items` and `read`. Optional: `prepare` (open or write the data), `digests` (a fingerprint
    per item; the default hashes the decoded pixels), `relative` (an item's name in the split hash),
    `where` (a split's place, for messages), `describe` (more for `results.json`).
    """

    name: ClassVar[str] = "source"  # the dataset name recorded when the config gives none
    root_must_exist: ClassVar[bool] = False  # the pre-flight refuses a `root` that is no folder
    root: Path | str | None = None  # where the data lives (`data.root` in results.json), if anywhere

    def prepare(self) -> None:
        """Open, download-free load, or materialize the data; called in `setup` on every process."""
        return None

    @abstractmethod
    def items(self, split: str) -> Mapping[str, Sequence[Key]] | None:
        """Class name -> the keys of `split` ("train", "val" or "test"), or None when the source has no
        such split (then `val` is held out of train; a missing train or test is an error). Train's class
        order is the label order unless `dataset.classes` chooses; key order fixes the seeded draws."""

    @abstractmethod
    def read(self, key: Key) -> Image.Image:
        """The item `key` as an RGB PIL image (grayscale as 3 channels); a bad item is named in the error."""

    def read_tensor(self, key: Key) -> Any:
        """What `dataset.decoder=torchvision` reads: a uint8 CHW tensor or, by default, `read(key)`."""
        return self.read(key)

    def digests(self, keys: Sequence[Key], checks: FileChecks) -> np.ndarray:
        """A digest row per key, in order (uint8, 32 bytes: by default the sha256 of the decoded pixels,
        which reads every item once per setup), for the split hashes and the duplicate check. Sources of
        files use the manifest (`checks.digests(paths)`) so unchanged files are not read again; a large
        source gives a stored fingerprint instead (as the Hugging Face and shard sources do)."""
        rows = []
        for key in keys:
            image = pil_image(self, key, self.read(key))
            digest = hashlib.sha256(f"{image.mode}|{image.size}|".encode())
            digest.update(image.tobytes())
            rows.append(digest.digest())
        return np.frombuffer(b"".join(rows), np.uint8).reshape(-1, 32)

    def relative(self, key: Key) -> str:
        """The key as it enters the split hash (independent of where the data is mounted)."""
        return str(key)

    def where(self, split: str) -> str:
        """Where `split` lives, for messages."""
        return f"the {split} split of {self.name}"

    def describe(self) -> dict[str, Any]:
        """Fields the source adds to `results.json` `data` (e.g. `format`, `path`)."""
        return {}


class StreamingSource(DataSource):
    """A source read in order, not item by item (tar shards from a URL): `items` lists the samples (from
    an index), and `stream` / `loader` replace `read` and the shared map-style loader. The shared module
    still selects classes, draws the budget and the validation split, and hashes the splits."""

    def read(self, key: Key) -> Image.Image:
        raise TransferlabError(
            f"dataset={self.name} streams its images, so item {key!r} cannot be read alone; use an image "
            "folder or Hugging Face dataset where items are read one by one."
        )

    @abstractmethod
    def stream(
        self, split: str, samples: Sequence[tuple[Key, int]], transform: Any, seed: int, shuffle: bool
    ) -> IterableDataset:
        """The (key, label) `samples` of `split` as a dataset of (transformed image, label), in order or
        shuffled per epoch with `seed`."""

    @abstractmethod
    def loader(self, stream: IterableDataset, position: tuple[int, int] | None, **kwargs: Any) -> DataLoader:
        """A DataLoader over `stream`. `position`: (epoch, batches done) where a (resumed) fit continues,
        None for evaluation; `kwargs`: seed, batch_size, num_workers, pin_memory, persistent_workers,
        multiprocessing_context."""


def pil_image(source: DataSource, key: Key, image: Any) -> Image.Image:
    """`image`, what `source.read(key)` returned, when it is a PIL image; else one line naming the source."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    cls = type(source)
    raise TransferlabError(
        f"dataset.source: {cls.__module__}.{cls.__qualname__}.read({key!r}) returned a "
        f"{type(image).__name__}, not a PIL image; return e.g. PIL.Image.fromarray(array)."
    )


def source_type(target: Any) -> type[DataSource] | None:
    """The source class a dataset `_target_` builds: the class itself when it is a `DataSource`, or a
    data module class's declared `source_type`; None when neither."""
    if isinstance(target, type) and issubclass(target, DataSource):
        return target
    declared = getattr(target, "source_type", None)
    return declared if isinstance(declared, type) and issubclass(declared, DataSource) else None
