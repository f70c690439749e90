"""Fast heads on cached features (L-BFGS probe, k-NN), the frozen-prefix cache, and damaged caches."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from transferlab.run.job import train

from .conftest import write_image_folder

DIGITS = ["dataset.classes=[0,1,2,3,4]", "trainer.max_epochs=3"]


def test_lbfgs_probe_is_an_ordinary_run_and_beats_a_short_sgd_probe(make_cfg, tmp_path):
    lbfgs = train(make_cfg(*DIGITS, "strategy=linear_probe", out=tmp_path / "lbfgs"))
    sgd = train(make_cfg(*DIGITS, "strategy=linear_probe", "strategy.head_solver=sgd", out=tmp_path / "sgd"))
    assert lbfgs["status"] == sgd["status"] == "ok"
    assert set(lbfgs["metrics"]) == set(sgd["metrics"])  # the same record as any run
    assert lbfgs["probe"]["solver"] == "lbfgs" and lbfgs["probe"]["l2"] in lbfgs["probe"]["grid"]
    assert len(lbfgs["probe"]["val_acc"]) == len(lbfgs["probe"]["grid"])
    assert lbfgs["metrics"]["test/acc"] >= sgd["metrics"]["test/acc"]
    assert lbfgs["objective"]["value"] == pytest.approx(max(lbfgs["probe"]["val_acc"]), abs=1e-6)
    assert (tmp_path / "lbfgs" / "head.safetensors").is_file() and lbfgs["export"]["sha256"]
    val = pd.read_csv(tmp_path / "lbfgs" / "csv" / "metrics.csv").dropna(subset=["val/acc"])
    assert len(val) == 1  # its one validation, logged like any epoch's


def test_knn_needs_no_training(make_cfg):
    record = train(make_cfg(*DIGITS, "strategy=knn", "strategy.k=10"))
    assert record["status"] == "ok", record["error"]
    assert record["probe"] == {
        "solver": "knn",
        "k": 10,
        "temperature": 0.07,
        "bank": record["data"]["sizes"]["train"],
    }
    assert record["metrics"]["test/acc"] > 0.5 and record["train_seconds"] < 5


def test_fast_heads_refuse_augmentation_with_the_reason(make_cfg, tmp_path):
    root = write_image_folder(tmp_path / "images")
    for solver in ("lbfgs", "knn"):
        strategy = (
            ["strategy=knn"] if solver == "knn" else ["strategy=linear_probe", "strategy.head_solver=lbfgs"]
        )
        record = train(
            make_cfg(
                "dataset=image_folder",
                f"dataset.root={root}",
                "dataset.image_size=16",
                *strategy,
                out=tmp_path / solver,
            )
        )
        assert record["status"] == "failed" and "training augmentation is on" in record["error"], record[
            "error"
        ]
        assert "dataset.augment.enabled=false" in record["error"]


def test_prefix_cache_gives_the_same_run_and_says_so(make_cfg, tmp_path, caplog):
    partial = [*DIGITS, "strategy=partial", "strategy.trainable_stages=1", "trainer.deterministic=true"]
    with caplog.at_level(logging.INFO):
        cached = train(make_cfg(*partial, out=tmp_path / "cached"))
    assert "Frozen-prefix cache used: stem+conv2" in caplog.text
    plain = train(make_cfg(*partial, "strategy.cache_prefix=false", out=tmp_path / "plain"))
    assert cached["prefix_cache"]["enabled"] and cached["prefix_cache"]["boundary"] == "conv2"
    for key, value in plain["metrics"].items():
        assert cached["metrics"][key] == pytest.approx(value, abs=1e-4), key
    caplog.clear()
    with caplog.at_level(logging.INFO):
        reg = train(make_cfg(*partial, "regularizer=l2_sp", out=tmp_path / "reg"))
    assert reg["prefix_cache"] == {
        "enabled": False,
        "why_not": "regularizer=l2_sp needs the whole network each step",
    }
    assert "Frozen-prefix cache not used: regularizer=l2_sp" in caplog.text


def test_damaged_and_unwritable_caches_cost_only_time(make_cfg, tmp_path, caplog):
    own = [*DIGITS, "strategy=knn", f"paths.cache_dir={tmp_path / 'cache'}"]
    first = train(make_cfg(*own, out=tmp_path / "a"))
    (damaged,) = (tmp_path / "cache" / "features").glob("train-*.pt")
    damaged.write_bytes(damaged.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again = train(make_cfg(*own, out=tmp_path / "b"))
    assert "is damaged" in caplog.text and "train" in again["feature_cache"]["misses"]
    assert again["metrics"] == first["metrics"]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    root = write_image_folder(tmp_path / "images")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        record = train(
            make_cfg("dataset=image_folder", f"dataset.root={root}", "dataset.image_size=16", "dataset.augment.enabled=false",
                     "strategy=knn", f"paths.cache_dir={blocker / 'cache'}", out=tmp_path / "c")
        )  # fmt: skip
    assert record["status"] == "ok", record["error"]
    assert "continuing without it" in caplog.text
    assert json.loads((tmp_path / "c" / "results.json").read_text())["status"] == "ok"
