"""Data at scale: the manifest (no re-reading), WebDataset shards and Hugging Face datasets."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from lightning_fabric.utilities.data import _set_sampler_epoch
from PIL import Image

from transferlab.core.errors import TransferlabError
from transferlab.data import shards
from transferlab.data.hf import HFDataModule
from transferlab.data.image_folder import ImageFolderDataModule
from transferlab.data.pack import pack
from transferlab.data.shards import ShardDataModule

from .conftest import write_image_folder

OPENS: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str) and args[0].endswith(".png"):
        OPENS.append(args[0])


sys.addaudithook(_audit)  # counts every open() of an image file in this process


def folder_module(root: Path, cache: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        root=str(root), manifest_dir=str(cache), image_size=16, num_workers=0, **kwargs
    )


def test_a_warm_manifest_reads_no_image(tmp_path):
    root = write_image_folder(tmp_path / "images")
    cold = folder_module(root, tmp_path / "manifests")
    OPENS.clear()
    cold.setup()
    assert len(OPENS) == 36 + 12  # every selected image read once: hashed and verified together
    OPENS.clear()
    warm = folder_module(root, tmp_path / "manifests")
    warm.setup()
    assert OPENS == [] and warm.manifest.read == 0  # a stat per file, nothing opened
    assert warm.split_hash("train") == cold.split_hash("train")
    stat_only = folder_module(root, tmp_path / "other", hash="stat", verify="none")
    OPENS.clear()
    stat_only.setup()
    assert OPENS == []  # hash=stat with verify=none never opens the data, even cold
    assert stat_only.describe()["hash"] == "stat"


def test_an_edited_file_is_read_again_and_changes_the_data_hash(tmp_path):
    root = write_image_folder(tmp_path / "images")
    before = folder_module(root, tmp_path / "m")
    before.setup()
    edited = root / "train" / "cat" / "cat_000.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(edited)
    os.utime(edited, ns=(10**18, 10**18))
    after = folder_module(root, tmp_path / "m")
    OPENS.clear()
    after.setup()
    assert OPENS == [str(edited)]  # only the changed file
    (split,) = [s for s, samples in after.splits.items() if str(edited) in dict(samples)]
    assert after.split_hash(split) != before.split_hash(split)
    assert after.split_hash("test") == before.split_hash("test")


def test_a_truncated_image_added_after_the_manifest_is_caught(tmp_path):
    root = write_image_folder(tmp_path / "images")
    folder_module(root, tmp_path / "m").setup()
    good = (root / "train" / "dog" / "dog_000.png").read_bytes()
    (root / "train" / "dog" / "late.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(TransferlabError, match=r"Corrupt image .*late\.png"):
        folder_module(root, tmp_path / "m").setup()


def test_recheck_folders_stats_only_changed_folders_and_sees_replaced_files(tmp_path, monkeypatch):
    real_stat, stated_files = os.stat, []

    def counting_stat(path, *args, **kwargs):  # the real call, counted
        if str(path).endswith(".png"):
            stated_files.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    root = write_image_folder(tmp_path / "images")
    old = 10**18  # folders and files dated long ago: nothing is racily recent
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, ns=(old, old))
    os.utime(root, ns=(old, old))
    folder_module(root, tmp_path / "m", recheck="folders").setup()  # records the folders' mtimes
    stated_files.clear()
    warm = folder_module(root, tmp_path / "m", recheck="folders")
    warm.setup()
    assert warm.manifest.read == 0 and stated_files == []  # one stat per folder, none per file
    assert warm.describe()["recheck"] == "folders"
    replaced = root / "train" / "dog" / "dog_001.png"  # replaced by a rename: its folder's mtime changes
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "new.png")
    os.replace(tmp_path / "new.png", replaced)
    stated_files.clear()
    OPENS.clear()
    after = folder_module(root, tmp_path / "m", recheck="folders")
    after.setup()
    assert {Path(p).parent.name for p in stated_files} == {"dog"}  # only the changed folder's files
    assert OPENS == [str(replaced)]  # and only the new file is read
    (split,) = [s for s, samples in after.splits.items() if str(replaced) in dict(samples)]
    assert after.split_hash(split) != warm.split_hash(split)
    stated_files.clear()
    folder_module(root, tmp_path / "m").setup()  # recheck=files: every file, as always
    assert len(stated_files) == 48


def _setup_reads(root: str, cache: str) -> tuple[int, str]:
    module = folder_module(Path(root), Path(cache))
    module.setup()
    return module.manifest.read, module.split_hash("train")


def test_concurrent_jobs_read_the_data_once_between_them(tmp_path):
    root = write_image_folder(tmp_path / "images")
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        done = list(pool.map(_setup_reads, [str(root)] * 4, [str(tmp_path / "m")] * 4))
    assert sum(read for read, _ in done) == 36 + 12  # the first holds the lock and reads; the rest find it
    assert len({split_hash for _, split_hash in done}) == 1


def test_the_manifest_keeps_what_other_selections_read_and_survives_damage(tmp_path):
    root = write_image_folder(tmp_path / "images")
    cache = tmp_path / "m"
    two = folder_module(root, cache, classes=["fox", "cat"])
    two.setup()
    assert two.manifest.read == 2 * (12 + 4)
    every = folder_module(root, cache)
    every.setup()
    assert every.manifest.read == 12 + 4  # only the dog images are new
    again = folder_module(root, cache, classes=["fox", "cat"])
    again.setup()
    assert again.manifest.read == 0 and again.split_hash("test") == two.split_hash("test")
    again.manifest.path.write_bytes(b"not a manifest")
    damaged = folder_module(root, cache)
    damaged.setup()  # a warning, then the data is read again and the manifest rewritten
    assert damaged.manifest.read == 48 and damaged.split_hash("train") == every.split_hash("train")
    rebuilt = folder_module(root, cache)
    rebuilt.setup()
    assert rebuilt.manifest.read == 0


def pixels(dataset) -> Counter:
    return Counter((hashlib.sha256(x.numpy().tobytes()).hexdigest(), y) for x, y in dataset)


def test_packed_shards_hold_the_same_images_and_labels_as_the_folder(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=7)
    pack(root, tmp_path / "shards", shard_size=5)
    folder = folder_module(root, tmp_path / "m", val_fraction=0.25)
    streamed = ShardDataModule(urls=str(tmp_path / "shards"), image_size=16, num_workers=0, val_fraction=0.25)
    folder.setup()
    streamed.setup()
    assert streamed.class_names == folder.class_names
    for split in ("train", "val", "test"):
        assert streamed.split_hash(split) == folder.split_hash(split)  # same files, same split
        assert pixels(streamed.dataset(split, augment=False)) == pixels(folder.dataset(split, augment=False))


def test_two_ranks_over_shards_see_every_sample_once(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "images", per_class=9, test_per_class=7)
    pack(root, tmp_path / "shards", shard_size=4)
    module = ShardDataModule(urls=str(tmp_path / "shards"), image_size=16, num_workers=0)
    module.setup()
    seen: Counter = Counter()
    trained = []
    for rank in (0, 1):
        monkeypatch.setattr(shards, "distributed", lambda rank=rank: (rank, 2))
        test = module.dataset("test", augment=False)
        seen.update(hashlib.sha256(x.numpy().tobytes()).hexdigest() for x, _ in test)
        assert len(test) == len(list(test))
        trained.append(len(list(module.dataset("train"))))
    assert sum(seen.values()) == len(module.splits["test"]) == 21 and max(seen.values()) == 1
    assert trained[0] == trained[1] > 0  # DDP: every rank trains the same number of samples


def test_shards_stream_each_epoch_in_its_own_seeded_order(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=9)
    pack(root, tmp_path / "shards", shard_size=4)
    module = ShardDataModule(
        urls=str(tmp_path / "shards"), image_size=16, num_workers=0, batch_size=4, augment={"enabled": False}
    )
    module.setup()

    def order(loader, epoch: int) -> list[float]:
        _set_sampler_epoch(loader, epoch)  # what Lightning's fit loop calls before each epoch
        return [round(float(x.sum()), 3) for batch, _ in loader for x in batch]

    loader = module.train_dataloader()
    first, second = order(loader, 0), order(loader, 1)
    assert sorted(first) == sorted(second) and first != second  # the same samples, reshuffled
    assert order(module.train_dataloader(), 1) == second  # a fresh loader (a resumed run) agrees


def test_shards_mistakes_are_named(tmp_path):
    with pytest.raises(TransferlabError, match="cannot read index.json"):
        ShardDataModule(urls=str(tmp_path / "nowhere")).setup()


def test_hf_local_imagefolder_matches_the_image_folder_split(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=8)
    folder = folder_module(
        root, tmp_path / "m", val_fraction=0.25, samples_per_class=4, classes=["fox", "cat"]
    )
    hf = HFDataModule(
        path=str(root), hf_cache_dir=str(tmp_path / "hf"), image_size=16, num_workers=0,
        val_fraction=0.25, samples_per_class=4, classes=["fox", "cat"],
    )  # fmt: skip
    folder.setup()
    hf.setup()
    assert hf.class_names == folder.class_names == ["fox", "cat"]
    for split in ("train", "val", "test"):
        assert sorted(hf.relative(k) for k, _ in hf.splits[split]) == sorted(
            folder.relative(k) for k, _ in folder.splits[split]
        )
    assert pixels(hf.dataset("test", augment=False)) == pixels(folder.dataset("test", augment=False))
    with pytest.raises(
        TransferlabError, match="dataset.label_key=labels: no such column.*Did you mean label"
    ):
        HFDataModule(path=str(root), hf_cache_dir=str(tmp_path / "hf"), label_key="labels").setup()


def test_hf_memory_maps_its_earlier_arrow_files_while_the_folder_is_unchanged(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=6)

    def hf() -> HFDataModule:
        module = HFDataModule(
            path=str(root), hf_cache_dir=str(tmp_path / "hf"), manifest_dir=str(tmp_path / "m"),
            image_size=16, num_workers=0,
        )  # fmt: skip
        module.setup()
        return module

    first, second = hf(), hf()
    assert first.loaded_from == "load_dataset" and second.loaded_from.startswith("arrow files")
    for split in ("train", "val", "test"):
        assert second.split_hash(split) == first.split_hash(split)
    assert pixels(second.dataset("test", augment=False)) == pixels(first.dataset("test", augment=False))
    Image.new("RGB", (64, 64), (5, 5, 5)).save(root / "test" / "cat" / "late.png")
    third = hf()  # a file more: datasets loads the folder again, and the new image is in
    assert third.loaded_from == "load_dataset"
    assert len(third.splits["test"]) == len(first.splits["test"]) + 1
    assert hf().loaded_from.startswith("arrow files")
    (record,) = (tmp_path / "hf" / "transferlab").glob("*.json")
    for damage in (  # whatever happened to what was remembered, the folder is loaded again
        lambda: record.write_text("{not json"),
        lambda: [p.unlink() for p in (tmp_path / "hf").rglob("*.arrow")],
    ):
        damage()
        again = hf()
        assert again.loaded_from == "load_dataset" and again.split_hash("test") == third.split_hash("test")


def test_a_shifted_test_set_over_shards_is_refused_before_reading(tmp_path):
    from omegaconf import OmegaConf

    from transferlab.evaluation.sets import build_eval_sets

    root = write_image_folder(tmp_path / "images", per_class=3)
    pack(root, tmp_path / "shards", shard_size=4)
    module = ShardDataModule(urls=str(tmp_path / "shards"), image_size=16, num_workers=0)
    cfg = OmegaConf.create({"eval_sets": {"rotation": {"shift": "rotation"}}, "seed": 0})
    with pytest.raises(TransferlabError, match=r"eval_sets.rotation: shifts need a dataset .* streams them"):
        build_eval_sets(cfg, module)
