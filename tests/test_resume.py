"""Starting and continuing runs: ckpt_path, resume with more epochs, refusals with the fix, the lock."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from transferlab.core.config import compose_train, config_changes
from transferlab.core.faults import ENV
from transferlab.run.checkpoint import RunLock
from transferlab.run.job import train

TINY = ["dataset.classes=[0,1,2]", "dataset.samples_per_class=10", "trainer.num_sanity_val_steps=0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-epoch run."""
    out = tmp_path_factory.mktemp("finished") / "run"
    from .conftest import compose_cfg

    record = train(compose_cfg(out, [*TINY, "trainer.max_epochs=2"]))
    assert record["status"] == "ok", record["error"]
    return out


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name != ".lock":
            digest.update(str(p.relative_to(path)).encode() + p.read_bytes())
    return digest.hexdigest()


def test_ckpt_path_starts_a_new_run_from_another_runs_checkpoint(make_cfg, finished, tmp_path):
    record = train(make_cfg(*TINY, "trainer.max_epochs=3", f"ckpt_path={finished}"))
    assert record["status"] == "ok", record["error"]
    assert record["started_from"] == str(finished / "checkpoints" / "last.ckpt")
    assert record["epochs"] == 3
    val = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv").dropna(subset=["val/acc"])
    assert val["epoch"].tolist() == [2]  # the new run trained the third epoch only


def test_resume_with_more_epochs_continues_and_stretches_the_schedule(make_cfg, finished, tmp_path, caplog):
    run = tmp_path / "copy"
    os.system(f"cp -r {finished} {run}")
    with caplog.at_level(logging.WARNING):
        record = train(make_cfg(*TINY, "trainer.max_epochs=4", "resume=true", out=run))
    assert record["status"] == "ok", record["error"]
    assert record["epochs"] == 4 and record["resumed_from"].endswith("last.ckpt")
    assert "learning-rate schedule now spans" in caplog.text
    val = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["val/acc"])
    assert val["epoch"].tolist() == [0, 1, 2, 3]  # each epoch once
    assert [a["status"] for a in record["attempts"]] == ["ok"]


def test_a_setting_added_since_a_run_started_with_its_empty_default_is_no_change():
    """A run interrupted before an upgrade resumes after it: `metrics: {}` (added by then) is no change."""
    before = {"seed": 1, "strategy": {"name": "full"}}
    assert config_changes(before, {**before, "metrics": {}, "extra": None}) == []
    assert config_changes({**before, "metrics": {}}, before) == []
    mine = {"p": {"_target_": "torchmetrics.classification.MulticlassPrecision"}}
    assert config_changes(before, {**before, "metrics": mine}) == [
        "metrics.p._target_: <absent> -> torchmetrics.classification.MulticlassPrecision"
    ]
    assert config_changes(before, {**before, "extra": 0}) == ["extra: <absent> -> 0"]


def test_resume_refuses_another_experiment_and_shows_what_changed(make_cfg, finished):
    before = tree_hash(finished)
    record = train(make_cfg(*TINY, "trainer.max_epochs=2", "resume=true", "strategy=partial", out=finished))
    assert record["status"] == "failed"
    assert (
        "holds a run with other settings" in record["error"]
        and "strategy.name: full -> partial" in record["error"]
    )
    assert "\n" not in record["error"]
    shorter = train(make_cfg(*TINY, "trainer.max_epochs=1", "resume=true", out=finished))
    assert "trainer.max_epochs: 2 -> 1" in shorter["error"]
    assert tree_hash(finished) == before  # nothing in the earlier run's directory changed


def test_finished_run_is_skipped_on_resume(make_cfg, finished):
    record = train(make_cfg(*TINY, "trainer.max_epochs=2", "resume=true", out=finished))
    assert record["status"] == "ok"
    assert record["started_at"] == json.loads((finished / "results.json").read_text())["started_at"]


def broken_checkpoints(finished: Path, tmp_path: Path) -> list[tuple[str, list[str], str]]:
    good = finished / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(4096))
    empty_dir = tmp_path / "empty_run"
    empty_dir.mkdir()
    return [
        ("missing", [f"ckpt_path={tmp_path / 'nope.ckpt'}"], "no such file or directory"),
        (
            "dir without checkpoint",
            [f"ckpt_path={empty_dir}"],
            "is a directory without checkpoints/last.ckpt",
        ),
        ("truncated", [f"ckpt_path={truncated}"], "is unreadable (truncated or corrupt"),
        ("random bytes", [f"ckpt_path={garbage}"], "is unreadable (truncated or corrupt"),
        (
            "other backbone",
            [f"ckpt_path={good}", "backbone=resnet18"],
            "was trained with backbone simple_cnn",
        ),
        ("other strategy", [f"ckpt_path={good}", "strategy=bitfit"], "was trained with strategy full"),
        ("both resume and ckpt_path", [f"ckpt_path={good}", "resume=true"], "use one of them"),
    ]


def test_bad_checkpoints_are_refused_with_one_line_and_the_fix(make_cfg, finished, tmp_path):
    for name, overrides, message in broken_checkpoints(finished, tmp_path):
        out = tmp_path / name.replace(" ", "_")
        record = train(make_cfg(*TINY, "trainer.max_epochs=3", *overrides, out=out))
        assert record["status"] == "failed", name
        assert message in record["error"], (name, record["error"])
        assert "\n" not in record["error"] and "weights_only=False" not in record["error"], name
        assert record["train_seconds"] is None, name


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path, caplog):
    out = tmp_path / "run"
    pid = os.fork()
    if pid == 0:
        try:
            torch.set_num_threads(1)  # OpenMP's thread pool does not survive fork
            os.environ[ENV] = "train_step@1"
            train(compose_train([*TINY, "trainer.max_epochs=1", "callbacks=minimal"], output_dir=out))
        finally:
            os._exit(1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 137
    assert not (out / "checkpoints" / "last.ckpt").exists()
    with caplog.at_level(logging.WARNING):
        record = train(
            compose_train([*TINY, "trainer.max_epochs=1", "callbacks=minimal", "resume=true"], output_dir=out)
        )
    assert record["status"] == "ok" and "starting this run over from the beginning" in caplog.text
    assert [a["status"] for a in record["attempts"]] == ["killed"]


def test_a_second_run_into_a_live_runs_directory_stops_at_once(make_cfg, tmp_path):
    live = tmp_path / "run"
    live.mkdir()
    (live / "results.json").write_text(
        json.dumps({"status": "running", "pid": 4242, "host": "node7", "started_at": 0})
    )
    before = tree_hash(live)
    with RunLock(live):  # a live run holds its directory
        record = train(make_cfg(*TINY, out=live))
    assert record["status"] == "failed" and "is in use by another run (pid 4242 on node7" in record["error"]
    assert tree_hash(live) == before  # the live run's files are untouched


def test_last_checkpoint_holds_the_latest_epoch_when_it_is_not_the_best(make_cfg, tmp_path):
    """Lightning 2.6 writes `save_last` only beside a new top-k checkpoint; ours is the newest state."""
    worst_is_best = "callbacks.model_checkpoint.mode=min"  # the best checkpoint stays an early epoch
    record = train(make_cfg(*TINY, "trainer.max_epochs=3", worst_is_best))
    assert record["status"] == "ok", record["error"]
    checkpoints = tmp_path / "run" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    best = torch.load(record["best_checkpoint"], weights_only=False)
    assert last["epoch"] == 2 and last["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 3
    assert best["epoch"] < 2  # so last.ckpt is not a copy of the best one
