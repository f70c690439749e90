"""W&B offline runs, read back from their `.wandb` transaction logs on disk."""

from __future__ import annotations

from pathlib import Path

from transferlab.train import train
from transferlab.wandb_offline import read_offline_run


def offline_runs(root: Path) -> list[Path]:
    return sorted(root.glob("**/wandb/offline-run-*"))


def test_offline_run_records_metrics_config_group_and_job_type(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default, not the environment's doing
    record = train(
        make_cfg("logger=wandb", "strategy=partial", "experiment_name=wb_check", out=tmp_path / "a")
    )
    assert record["status"] == "ok", record["error"]
    # A second job in the same process gets its own run (wandb.finish after each job).
    record2 = train(make_cfg("logger=wandb", "strategy=full", "experiment_name=wb_check", out=tmp_path / "b"))
    assert record2["status"] == "ok", record2["error"]

    runs = offline_runs(tmp_path)
    assert [r.parent.parent.name for r in runs] == ["a", "b"]
    first, second = (read_offline_run(r) for r in runs)
    assert first.run["id"] != second.run["id"]
    assert first.run["group"] == "wb_check" and first.run["job_type"] == "partial"
    assert second.run["job_type"] == "full"
    assert first.config["strategy"]["name"] == "partial"
    assert first.config["strategy"]["trainable_stages"] == 1  # the resolved config
    assert first.config["dataset"]["root"].endswith("digits")
    logged = {k for row in first.history for k in row}
    assert {"train/loss", "train/loss_epoch", "val/acc", "test/acc"} <= logged
    assert abs(first.summary["test/acc"] - record["metrics"]["test/acc"]) < 1e-6
