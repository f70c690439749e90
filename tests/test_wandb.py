"""W&B offline runs, read back from their `.wandb` transaction logs on disk."""

from __future__ import annotations

from pathlib import Path

from transferlab.run.job import train

from .wandb_offline import read_offline_run


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
    # The run's cost, hashes and final metrics in its summary; tables; the exported backbone.
    assert first.summary["run/trainable_params"] == record["trainable_params"]
    assert first.summary.get("run/weights_sha256") == record["weights_sha256"]  # None: random init
    assert first.summary["data/test_sha256"] == record["data"]["split_sha256"]["test"]
    assert first.summary["final/test/acc"] == record["metrics"]["test/acc"]
    assert first.summary["run/train_seconds"] == record["train_seconds"]
    logged_keys = {k for row in first.history for k in row}
    for table in (
        "test/per_class_accuracy",
        "test/confusion_matrix",
    ):  # wandb.Table: <name>/_type, /nrows, ...
        assert f"{table}/_type" in logged_keys
    assert first.run["tags"] == ["partial"]
    models = [a for a in first.artifacts if a["type"] == "model"]
    assert models and {"backbone.safetensors", "backbone.json", "head.safetensors"} <= set(models[0]["files"])
    assert sum(map(sum, record["confusion_matrix"])) == record["test_samples"]


def test_tensorboard_hparams_hold_the_final_metrics(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = train(make_cfg("logger=tensorboard", out=tmp_path / "tb"))
    assert record["status"] == "ok", record["error"]
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert "test/acc" in scalars and "hp_metric" not in scalars
