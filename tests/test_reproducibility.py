"""Reproducible, resumable, resilient runs on the real stack."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from transferlab.run.job import train

from .conftest import REPO, fork_cli, write_image_folder

DETERMINISTIC = [
    "trainer.deterministic=true",
    "seed=7",
    "dataset.classes=[0,1,2,3,4]",
    "trainer.max_epochs=2",
]
QUIET = ["trainer.enable_progress_bar=false", "callbacks=minimal"]


def test_two_seeded_runs_are_bit_identical(make_cfg, tmp_path):
    a = train(make_cfg(*DETERMINISTIC, out=tmp_path / "a"))
    b = train(make_cfg(*DETERMINISTIC, out=tmp_path / "b"))
    assert a["status"] == b["status"] == "ok", (a["error"], b["error"])
    assert a["metrics"] == b["metrics"]
    assert a["export"]["sha256"] == b["export"]["sha256"]  # final weights, bit for bit
    assert (tmp_path / "a" / "backbone.safetensors").read_bytes() == (
        tmp_path / "b" / "backbone.safetensors"
    ).read_bytes()
    assert a["seed"] == 7 and a["versions"]["torch"] and a["versions"]["pytorch-lightning"]
    assert set(a["git"]) == {"revision", "dirty"}
    assert a["data"]["split_sha256"] == b["data"]["split_sha256"]
    c = train(make_cfg(*DETERMINISTIC[:-1], "trainer.max_epochs=2", "seed=8", out=tmp_path / "c"))
    assert c["export"]["sha256"] != a["export"]["sha256"]


@pytest.mark.slow
def test_sweep_resume_skips_finished_jobs(tmp_path):
    good = write_image_folder(tmp_path / "good")
    late = tmp_path / "late"  # empty on the first attempt: that job fails
    late.mkdir()
    args = [
        "-m",
        "dataset=image_folder",
        f"dataset.root={good},{late}",
        "dataset.image_size=16",
        "dataset.num_workers=0",
        "dataset.persistent_workers=false",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *QUIET,
    ]
    first = fork_cli(*args, cwd=REPO)  # the sweep's process: a fork of this one
    assert first.returncode == 1  # one failed job
    job0 = json.loads((tmp_path / "sweep" / "0" / "results.json").read_text())
    assert json.loads((tmp_path / "sweep" / "1" / "results.json").read_text())["status"] == "failed"

    write_image_folder(late)
    second = fork_cli(*args, "resume=true", cwd=REPO)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    again0 = json.loads((tmp_path / "sweep" / "0" / "results.json").read_text())
    assert again0["started_at"] == job0["started_at"]  # skipped, not re-run
    assert json.loads((tmp_path / "sweep" / "1" / "results.json").read_text())["status"] == "ok"
    assert "Jobs: 2 (2 ok)." in (tmp_path / "sweep" / "report.md").read_text()


@pytest.mark.parametrize("epochs", [1, 5])
def test_divergence_is_not_success(make_cfg, tmp_path, epochs):
    record = train(
        make_cfg(
            "optimizer.lr=10", "scheduler=null", "dataset.classes=[0,1,2]", f"trainer.max_epochs={epochs}"
        )
    )
    assert record["status"] == "diverged", record.get("error")
    assert record["diverged"]["learning_rate"] == pytest.approx(10.0)
    assert record["diverged"]["step"] < 20  # stopped at once, not after all the epochs
    assert (
        f"at step {record['diverged']['step']}" in record["error"] and "lower optimizer.lr" in record["error"]
    )
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "diverged"


def test_unwritable_output_directory_is_clear(make_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    record = train(make_cfg(out=blocker / "run"))
    assert record["status"] == "failed" and "is not writable" in record["error"]


def test_too_little_disk_is_an_error_at_start(make_cfg, tmp_path):
    record = train(make_cfg("paths.disk_reserve_mb=1e12"))
    assert record["status"] == "failed" and "checkpoints need about" in record["error"]
    assert record["train_seconds"] is None  # before any training


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_too_little_disk_on_a_real_small_filesystem(make_cfg, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        record = train(make_cfg("paths.disk_reserve_mb=0", out=mount / "run"))
        assert record["status"] == "failed" and "MiB free" in record["error"]
        assert json.loads((mount / "run" / "results.json").read_text())["status"] == "failed"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_secrets_never_land_in_outputs(make_cfg, tmp_path, monkeypatch):
    secret = "wk-test-0123456789abcdef-secret"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("MY_SERVICE_TOKEN", secret + "-2")
    refused = train(make_cfg("logger=many", "+extra.token=${oc.env:MY_SERVICE_TOKEN}", out=tmp_path / "a"))
    assert refused["status"] == "failed" and "MY_SERVICE_TOKEN looks like a secret" in refused["error"]
    record = train(make_cfg("logger=many", "+extra.token=not-a-secret", out=tmp_path / "run"))
    assert record["status"] == "ok", record["error"]
    assert record["config"]["extra"]["token"] == "***"  # a secret-looking key is still redacted
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []  # W&B, TensorBoard, CSV, checkpoints, .hydra: the key never reaches a file
