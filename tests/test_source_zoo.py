"""experiment=source_zoo: the offline source zoo is built once (cached like backbone.pretrained=source) and
reused; its generated sources (fractals, shifted digits) are deterministic and what they claim to be."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf, open_dict
from PIL import Image

from transferlab.run.pretrain import compose_source
from transferlab.sources.datasets import shift_digit, write_fractals
from transferlab.sources.select import CSV, run_selection
from transferlab.sources.zoo import INDEX, ensure_zoo, member_config

from .conftest import compose_cfg

QUICK = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks=minimal",
    "trainer.enable_progress_bar=false",
]
TINY_FRACTALS = [
    "dataset=fractals",
    "dataset.fractal_classes=4",
    "dataset.train_per_class=6",
    "dataset.test_per_class=2",
]


def test_the_shipped_zoo_has_graded_sources(tmp_path):
    cfg = compose_cfg(tmp_path / "zoo", ["experiment=source_zoo"])
    members = cfg.zoo.members
    assert members.random is None
    sources = {name: compose_source(member_config(cfg, m)) for name, m in members.items() if m is not None}
    assert list(sources["near"].dataset.classes) == [0, 1, 2, 3, 4]
    assert sources["near_data25"].dataset.samples_per_class == 22
    assert sources["near_epochs25"].trainer.max_epochs == 3 < sources["near"].trainer.max_epochs
    assert sources["inverted"].dataset.name == "digits_inverted"
    assert list(sources["inverted"].dataset.classes) == [
        5,
        6,
        7,
        8,
        9,
    ]  # the target's classes, another domain
    assert sources["fractals"].dataset.fractal_classes == 50
    for src in sources.values():  # every source is pretrained with the target's backbone
        assert src.backbone.name == cfg.backbone.name and src.backbone.pretrained is False


def _tiny_zoo(out):
    cfg = compose_cfg(out, ["experiment=source_zoo", f"zoo.overrides=[{','.join(repr(o) for o in QUICK)}]"])
    with open_dict(cfg):
        cfg.zoo.members = OmegaConf.create(
            {
                "near": {"experiment": "digits_source", "overrides": []},
                "fractals": {"experiment": "digits_source", "overrides": TINY_FRACTALS},
                "random": None,
            }
        )
    return cfg


def test_the_zoo_is_built_once_and_reused(tmp_path):
    first = ensure_zoo(_tiny_zoo(tmp_path / "zoo1"))
    assert first["random"] is None and first["near"] != first["fractals"]
    built = pd.read_csv(tmp_path / "zoo1" / INDEX).set_index("member")
    assert not built.loc["near", "reused"] and not built.loc["fractals", "reused"]
    assert 0.0 <= built.loc["fractals", "source_acc"] <= 1.0
    stamps = {name: (d / "results.json").stat().st_mtime_ns for name, d in first.items() if d is not None}

    again = ensure_zoo(_tiny_zoo(tmp_path / "zoo2"))  # a second build trains nothing
    assert again == first
    reused = pd.read_csv(tmp_path / "zoo2" / INDEX).set_index("member")
    assert reused.loc[["near", "fractals"], "reused"].all()
    assert {n: (d / "results.json").stat().st_mtime_ns for n, d in again.items() if d is not None} == stamps

    sel = _tiny_zoo(tmp_path / "sel")
    with open_dict(sel):
        sel.selection = {"candidates": ["zoo"], "scores": ["logme", "leep"]}
    table = run_selection(sel)
    assert list(table["candidate"]) == ["zoo:near", "zoo:fractals", "zoo:random"]
    assert table["source_acc"].iloc[1] == pytest.approx(built.loc["fractals", "source_acc"])
    assert table["has_head"].tolist() == [True, True, False]
    assert (tmp_path / "sel" / CSV).is_file()


def _digest(root):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*.png")))).hexdigest()


def test_fractals_are_seeded_and_each_class_is_its_own_system(tmp_path):
    write_fractals(tmp_path / "a", classes=3, train=2, test=1, size=32, seed=0, jitter=0.05)
    write_fractals(tmp_path / "b", classes=3, train=2, test=1, size=32, seed=0, jitter=0.05)
    write_fractals(tmp_path / "c", classes=3, train=2, test=1, size=32, seed=1, jitter=0.05)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    images = {
        c: np.asarray(Image.open(tmp_path / "a" / "train" / f"f{c:04d}" / "0000.png"), dtype=float)
        for c in range(3)
    }
    assert all(img.shape == (32, 32) and (img > 0).mean() >= 0.1 for img in images.values())
    assert not np.array_equal(images[0], images[1])
    assert sorted(p.name for p in (tmp_path / "a" / "test").iterdir()) == ["f0000", "f0001", "f0002"]


def test_shifted_digits_are_inverted_with_noise():
    pixels = np.tile(np.array([0, 255], dtype=np.uint8), (8, 4))
    clean = shift_digit(pixels, np.random.default_rng(0), invert=True, noise_std=0.0)
    assert np.array_equal(clean, 255 - pixels)
    noisy = shift_digit(pixels, np.random.default_rng(0), invert=True, noise_std=0.2)
    assert 0 < np.abs(noisy.astype(int) - clean).mean() < 60
