"""Image-folder data module on generated folders, and every bad-input case."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from transferlab.core.errors import TransferlabError
from transferlab.data import DigitsDataModule, ImageFolderDataModule

from .conftest import write_image_folder


def dm(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("num_workers", 0)
    module = ImageFolderDataModule(root=str(root), image_size=32, **kwargs)
    module.setup()
    return module


def test_layout_and_stratified_val_split(image_folder):
    a = dm(image_folder, val_fraction=0.25, seed=0)
    assert a.class_names == ["cat", "dog", "fox"]
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 27, "val": 9, "test": 12}
    assert sorted(y for _, y in a.splits["val"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # stratified
    b = dm(image_folder, val_fraction=0.25, seed=0)
    assert a.splits["val"] == b.splits["val"]  # deterministic for a seed
    assert a.split_hash("val") == b.split_hash("val")
    c = dm(image_folder, val_fraction=0.25, seed=1)
    assert a.splits["val"] != c.splits["val"]
    assert not {p for p, _ in a.splits["val"]} & {p for p, _ in a.splits["train"]}


def test_explicit_val_folder_is_used(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=6, val_per_class=2)
    module = dm(root)
    assert len(module.splits["val"]) == 6 and len(module.splits["train"]) == 18
    assert all("/val/" in str(p) for p, _ in module.splits["val"])


def test_classes_subset_and_samples_per_class(image_folder):
    module = dm(image_folder, classes=["fox", "cat"], samples_per_class=3, val_fraction=0.25)
    assert module.class_names == ["fox", "cat"]
    labels = sorted(y for _, y in module.splits["train"])
    assert labels == [0, 0, 1, 1]  # the labelled budget of 3 per class holds its validation image
    assert sorted(y for _, y in module.splits["val"]) == [0, 1]
    fox_files = {Path(p).parent.name for p, y in module.splits["train"] if y == 0}
    assert fox_files == {"fox"}
    assert {Path(p).parent.name for p, _ in module.splits["test"]} == {"fox", "cat"}


def test_batches_are_rgb_and_normalized(tmp_path):
    root = write_image_folder(tmp_path / "gray", grayscale=True)
    module = dm(root, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x, y = next(iter(module.eval_dataloader("train")))
    assert x.shape[1:] == (3, 32, 32)
    assert x.min() < -1.0  # normalized with std 0.25: dark pixels fall below -1
    x2, _ = next(iter(module.eval_dataloader("train")))
    assert (x == x2).all()  # evaluation transforms are deterministic


def test_digits_materialized_as_image_folder(cache_dir):
    module = DigitsDataModule(
        root=str(cache_dir / "digits"), image_size=16, classes=[5, 6, 7, 8, 9], num_workers=0
    )
    module.setup()
    assert module.class_names == ["5", "6", "7", "8", "9"]
    assert (cache_dir / "digits" / "train" / "5").is_dir()
    assert (cache_dir / "digits" / "test" / "9").is_dir()
    total = sum(len(v) for v in module.splits.values())
    assert 850 < total < 950  # half of the 1,797 digits


# ------------------------------------------------------------------------------- bad input
def test_missing_root(tmp_path):
    with pytest.raises(TransferlabError, match=r"dataset.root=.*does not exist"):
        dm(tmp_path / "nope")


def test_root_without_train(tmp_path):
    (tmp_path / "test" / "a").mkdir(parents=True)
    with pytest.raises(TransferlabError, match=r"has no train/ folder"):
        dm(tmp_path)


def test_empty_class_folder(image_folder):
    (image_folder / "train" / "emu").mkdir()
    with pytest.raises(TransferlabError, match=r"Class folder .*emu has no images"):
        dm(image_folder)


def test_test_class_missing_from_train(image_folder):
    write_image_folder(image_folder, classes=("yak",), per_class=0, test_per_class=2)
    with pytest.raises(TransferlabError, match=r"Test classes \['yak'\].*are not in .*train"):
        dm(image_folder)


def test_corrupt_image_is_named(image_folder):
    bad = image_folder / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(TransferlabError, match=r"Corrupt image .*broken\.png"):
        dm(image_folder)


def test_unknown_class_suggests(image_folder):
    with pytest.raises(TransferlabError, match=r"Did you mean cat"):
        dm(image_folder, classes=["cta"])


def test_data_checks_warn_in_clear_words_and_are_recorded(tmp_path, caplog):
    """Test lacking a class, too few images for samples_per_class, the same image in two splits."""
    import logging
    import shutil

    root = write_image_folder(
        tmp_path / "imgs", classes=("cat", "dog", "fox"), per_class=6, test_per_class=2, size=16
    )
    shutil.rmtree(root / "test" / "fox")
    leaked = sorted((root / "train" / "cat").iterdir())[0]
    shutil.copy(leaked, root / "test" / "cat" / "copy-of-a-training-image.png")
    (root / "train" / "dog" / "dog_000.png").unlink()  # dog keeps 5 training images
    with caplog.at_level(logging.WARNING):
        module = dm(root, samples_per_class=6, val_fraction=0.2)
    assert module.test_missing_classes == ["fox"]
    assert module.duplicates_across_splits == 1
    described = module.describe()
    assert described["test_missing_classes"] == ["fox"] and described["duplicates_across_splits"] == 1
    text = caplog.text
    assert "no images of class(es) ['fox']" in text
    assert "1 image(s) appear (same content) in more than one of train/val/test" in text
    assert "dataset.samples_per_class=6 is more than" in text and "dog:" in text


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"classes": ["cat"]}, "a classifier needs at least 2"),
        ({"samples_per_class": 0}, "dataset.samples_per_class=0 must be at least 1"),
    ],
)
def test_data_mistakes_are_errors(image_folder, kwargs, message):
    with pytest.raises(TransferlabError, match=re.escape(message)):
        dm(image_folder, **kwargs)
