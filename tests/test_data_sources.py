"""A data source written outside the package (only `items` and `read`) gets the shared module's splitting,
class subsets, samples_per_class, augmentation, split hashes and duplicate check; built from a user's
YAML that extends image_folder; and the pre-flight recognises sources by their class."""

from __future__ import annotations

import json
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from transferlab.core.errors import TransferlabError
from transferlab.data import DataModule, DataSource
from transferlab.data.folders import to_rgb
from transferlab.run.preflight import preflight

from .conftest import compose_cfg

CLASSES = ("a", "b", "c")


def arrays(per_class: int, test_per_class: int) -> dict[str, list[tuple[np.ndarray, str]]]:
    """16x16 RGB arrays, left-right asymmetric (a flip changes them), brighter for later classes."""
    rng = np.random.default_rng(0)
    out: dict[str, list[tuple[np.ndarray, str]]] = {"train": [], "test": []}
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(CLASSES):
            for _ in range(n):
                image = rng.integers(0, 40, (16, 16, 3)).astype(np.uint8)
                image[:, :4] += np.uint8(60 * (c + 1))
                out[split].append((image, name))
    return out


class ArraySource(DataSource):
    """Only what the interface asks: items per split with their class, and one item read as an image."""

    name = "arrays"

    def __init__(self, per_class: int = 10, test_per_class: int = 3):
        self.data = arrays(per_class, test_per_class)

    def items(self, split):
        if split not in self.data:
            return None
        found: dict[str, list] = {}
        for i, (_, label) in enumerate(self.data[split]):
            found.setdefault(label, []).append((split, i))
        return found

    def read(self, key):
        split, i = key
        return Image.fromarray(self.data[split][i][0])


def module(source: DataSource | None = None, **kwargs) -> DataModule:
    kwargs = {"image_size": 16, "num_workers": 0, "augment": {"enabled": False}, **kwargs}
    dm = DataModule(source or ArraySource(), **kwargs)
    dm.setup()
    return dm


def test_a_new_source_gets_subsets_budget_and_validation_from_the_shared_module():
    source = ArraySource()
    dm = module(source, classes=["c", "a"], samples_per_class=4, val_fraction=0.25)
    assert dm.class_names == ["c", "a"] and dm.num_classes == 2
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 6, "val": 2, "test": 6}
    assert Counter(y for _, y in dm.splits["val"]) == {0: 1, 1: 1}  # stratified, inside the budget
    assert Counter(y for _, y in dm.splits["train"]) == {0: 3, 1: 3}
    for split in ("train", "val", "test"):  # every label is the item's own class, as numbered here
        for (part, i), label in dm.splits[split]:
            assert source.data[part][i][1] == ["c", "a"][label]
    assert not {k for k, _ in dm.splits["train"]} & {k for k, _ in dm.splits["val"]}
    same = module(classes=["c", "a"], samples_per_class=4, val_fraction=0.25)
    other = module(classes=["c", "a"], samples_per_class=4, val_fraction=0.25, seed=1)
    assert same.splits == dm.splits and other.splits != dm.splits  # seeded
    record = dm.describe()
    assert record["labels_used"] == 8 and record["val_source"] == "budget" and record["name"] == "arrays"
    assert set(record["split_sha256"]) == {"train", "val", "test"}
    assert same.split_hash("val") == dm.split_hash("val") != other.split_hash("val")
    pooled = module(val_source="pool", samples_per_class=4, val_fraction=0.5)
    assert {k: len(v) for k, v in pooled.splits.items()} == {"train": 12, "val": 15, "test": 9}
    with pytest.raises(
        TransferlabError, match=r"dataset.classes: \['d'\] not found in the train split of arrays"
    ):
        module(classes=["a", "d"])


def test_a_new_source_gets_augmentation_loaders_and_the_duplicate_check():
    flipped = module(augment={"enabled": True, "zoom": [1.0, 1.0], "hflip": 1.0})
    plain = flipped.dataset("train", augment=False)
    augmented = flipped.dataset("train")
    x, y = augmented[0]
    assert y == plain[0][1] and torch.equal(x, torch.flip(plain[0][0], dims=[-1]))
    assert not torch.equal(x, plain[0][0])  # the images are asymmetric: the flip shows
    batch, labels = next(iter(flipped.eval_dataloader("test")))
    assert batch.shape == (9, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    source = ArraySource()
    source.data["test"][0] = (source.data["train"][0][0].copy(), "a")  # a training image, again in test
    assert module(source).duplicates_across_splits == 1
    assert module().duplicates_across_splits == 0
    assert module(hash="stat").duplicates_across_splits is None  # as for folders: no content, no check


class ModeSource(ArraySource):
    """ArraySource's images in another PIL mode (grayscale, 16-bit, palette, RGBA), or as bare arrays."""

    def __init__(self, mode: str | None):
        super().__init__(per_class=4, test_per_class=2)
        self.mode = mode

    def read(self, key):
        image = super().read(key)
        return np.asarray(image) if self.mode is None else image.convert(self.mode)


@pytest.mark.parametrize("mode", ["L", "I", "I;16", "P", "RGBA", "LA"])
def test_a_source_reading_non_rgb_images_gets_rgb_tensors(mode):
    dm = module(ModeSource(mode))
    x, _ = dm.dataset("test")[0]
    expected = ArraySource(per_class=4, test_per_class=2).read(dm.splits["test"][0][0]).convert(mode)
    assert x.shape == (3, 16, 16) and dm.read(dm.splits["test"][0][0]).mode == "RGB"
    want = torch.from_numpy(np.asarray(to_rgb(expected))).permute(2, 0, 1).float() / 255
    assert torch.allclose(x * 0.5 + 0.5, want, atol=1e-6)  # the RGB conversion of its image, normalized
    batch, _ = next(iter(dm.eval_dataloader("test")))
    assert batch.shape == (6, 3, 16, 16)


def test_a_source_reading_something_else_than_an_image_is_named_in_one_line():
    with pytest.raises(TransferlabError) as caught:  # at setup, where the split hashes read every item
        module(ModeSource(None))
    message = str(caught.value)
    assert (
        "\n" not in message and "ModeSource.read(('train', 0)) returned a ndarray, not a PIL image" in message
    )


class NumberedSource(ArraySource):
    """ArraySource with its classes keyed by number (0, 1, 2), or its listing not a mapping."""

    def items(self, split):
        found = super().items(split)
        if found is None or split != "test" or not self.broken:
            return None if found is None else {CLASSES.index(c): keys for c, keys in found.items()}
        return list(found.values())

    broken = False


def test_a_source_may_number_its_classes_and_a_listing_that_is_no_mapping_is_named():
    dm = module(NumberedSource(), classes=[2, 0])
    assert dm.class_names == ["2", "0"] and {k: len(v) for k, v in dm.splits.items()} == {
        "train": 16,
        "val": 4,
        "test": 6,
    }
    assert all(CLASSES.index(dm.source.data[p][i][1]) == [2, 0][y] for (p, i), y in dm.splits["test"])
    broken = NumberedSource()
    broken.broken = True
    with pytest.raises(TransferlabError, match=r"NumberedSource.items\('test'\) returned a list; return a"):
        module(broken)


USER_MODULE = """
import numpy as np
from PIL import Image
from transferlab.data.sources import DataSource


class NoiseSource(DataSource):
    name = "noise"

    def __init__(self, per_class: int = 6, size: int = 12):
        rng = np.random.default_rng(0)
        self.images = {
            split: [(rng.integers(0, 255, (size, size)).astype(np.uint8) // (1 + c), str(c))
                    for c in range(2) for _ in range(n)]
            for split, n in (("train", per_class), ("test", 2))
        }

    def items(self, split):
        if split not in self.images:
            return None
        found = {}
        for i, (_, label) in enumerate(self.images[split]):
            found.setdefault(label, []).append((split, i))
        return found

    def read(self, key):
        split, i = key
        return Image.fromarray(self.images[split][i][0]).convert("RGB")


class FolderOnlySource(NoiseSource):
    root_must_exist = True

    def __init__(self, root: str, **kwargs):
        super().__init__(**kwargs)
        self.root = root
"""

USER_YAML = """
defaults:
  - image_folder
  - _self_
_target_: transferlab.data.DataModule
name: noise
root: null
image_size: 12
num_workers: 0
persistent_workers: false
source:
  _target_: usersource.NoiseSource
  per_class: 6
"""


@pytest.fixture
def user_config(tmp_path, monkeypatch):
    """A user's module and config dir outside the package: a class and a YAML, nothing else."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "usersource.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "noise.yaml").write_text(textwrap.dedent(USER_YAML))
    yield f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    sys.modules.pop("usersource", None)


def test_a_user_source_from_its_own_yaml_trains_and_is_recorded(tmp_path, user_config):
    from transferlab.train import train

    overrides = [user_config, "dataset=noise", "dataset.samples_per_class=4", "backbone=simple_cnn"]
    cfg = compose_cfg(tmp_path / "run", [*overrides, "strategy=full", "trainer.max_epochs=1"])
    assert cfg.dataset.val_fraction == 0.2 and cfg.dataset.augment.hflip == 0.5  # image_folder's keys
    record = train(cfg)
    assert record["status"] == "ok", record.get("error")
    data = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
    assert data["name"] == "noise" and data["class_names"] == ["0", "1"] and data["root"] is None
    assert data["sizes"] == {"train": 6, "val": 2, "test": 4} and data["labels_used"] == 8


def test_the_preflight_asks_the_source_class_whether_its_root_must_exist(tmp_path, user_config):
    folder = [
        "dataset.source._target_=usersource.FolderOnlySource",
        f"+dataset.source.root={tmp_path}/nowhere",
    ]
    with pytest.raises(TransferlabError, match="nowhere: no such directory"):
        preflight([user_config, "dataset=noise", *folder, f"hydra.run.dir={tmp_path}/run"])
    preflight([user_config, "dataset=noise", f"hydra.run.dir={tmp_path}/run"])  # its root needs no folder
    cfg = compose_cfg(tmp_path / "x", [user_config, "dataset=noise"])
    dm = instantiate(cfg.dataset, data_config={"mean": (0.5,) * 3, "std": (0.5,) * 3}, _convert_="all")
    assert type(dm) is DataModule and type(dm.source).__name__ == "NoiseSource"
