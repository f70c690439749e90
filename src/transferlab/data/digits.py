"""The embedded default: scikit-learn's handwritten digits, written once as an image folder."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.data.folders import ImageFolderSource
from transferlab.data.image_folder import ImageFolderDataModule

log = logging.getLogger(__name__)

DIGITS_TEST_FRACTION = 0.25
_MARKER = ".complete"


def materialize_digits(root: str | os.PathLike) -> Path:
    """Write the 1,797 digits (8x8 grayscale) as ROOT/{train,test}/<digit>/<index>.png, once.

    The train/test split is fixed (stratified, random_state=0) so every run sees the same test set.
    The folder appears atomically (written to a temporary folder, then renamed).
    """
    root = Path(root).expanduser().resolve()
    if (root / _MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    from sklearn.datasets import load_digits  # scikit-learn only the first time (~0.2 s for every job)
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    idx = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=0
    )

    def write(tmp: Path) -> None:
        for split, members in (("train", train_idx), ("test", test_idx)):
            for i in members:
                folder = tmp / split / str(digits.target[i])
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")

    return materialize(root, write, "sklearn.datasets.load_digits")


def materialize(root: str | os.PathLike, write: Callable[[Path], None], what: str) -> Path:
    """Create `root` once by `write(tmp)` into a temporary sibling folder, then an atomic rename."""
    root = Path(root).expanduser().resolve()
    if (root / _MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        write(tmp)
        (tmp / _MARKER).write_text(what + "\n")
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first, or a stale partial folder exists
            if not (root / _MARKER).is_file():
                shutil.rmtree(root, ignore_errors=True)
                os.rename(tmp, root)
        log.info("Wrote %s to %s", what, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


class DigitsSource(ImageFolderSource):
    """The digits as an image folder, written on first use (`prepare`): the same code path as user data."""

    name = "digits"
    root_must_exist = False  # written by `prepare`

    def prepare(self) -> None:
        materialize_digits(self.root)


class DigitsDataModule(ImageFolderDataModule):
    """scikit-learn digits through the very same image-folder code path as user data (`dataset=digits`).

    `classes` defines a task, e.g. [0, 1, 2, 3, 4] (source) and [5, 6, 7, 8, 9] (target).
    """

    source_type = DigitsSource

    def prepare_data(self) -> None:
        self.prepare_root()
