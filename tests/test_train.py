"""One run end to end with the real Trainer: results.json, accuracy, run directories, W&B offline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from transferlab.run.job import train

from .conftest import REPO, fork_cli, fork_start, fork_wait, run_cli

REQUIRED = {
    "status",
    "error",
    "metrics",
    "strategy",
    "backbone",
    "dataset",
    "seed",
    "trainable_params",
    "total_params",
    "train_seconds",
    "peak_memory_mb",
    "config",
    "versions",
    "git",
    "weights_sha256",
    "class_names",
}


def test_fast_dev_run_of_the_default(make_cfg, tmp_path):
    record = train(make_cfg("debug=fast"))
    assert record["status"] == "ok", record["error"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert REQUIRED <= set(saved)
    assert saved["config"]["trainer"]["fast_dev_run"] is True
    assert saved["versions"]["torch"] and saved["versions"]["timm"]
    assert (tmp_path / "run" / "backbone.safetensors").is_file()


def test_short_digits_run_beats_chance(make_cfg, tmp_path):
    record = train(make_cfg("trainer.max_epochs=4", "dataset.classes=[0,1,2,3,4]", "optimizer.lr=0.003"))
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["test/acc"] > 0.8  # chance is 0.2
    assert 0 <= record["metrics"]["test/ece"] <= 1 and record["metrics"]["test/f1_macro"] > 0.7
    assert record["class_names"] == ["0", "1", "2", "3", "4"]
    assert record["trainable_params"] == record["total_params"] > 100_000
    assert record["best_checkpoint"].endswith(".ckpt")
    metrics_csv = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "val/acc" in metrics_csv and "train/loss," in metrics_csv and "test/acc" in metrics_csv


def test_image_folder_run(make_cfg, image_folder):
    record = train(
        make_cfg(
            "dataset=image_folder",
            f"dataset.root={image_folder}",
            "dataset.image_size=32",
            "dataset.num_workers=0",
            "dataset.persistent_workers=false",
            "trainer.max_epochs=2",
        )
    )
    assert record["status"] == "ok", record["error"]
    assert record["class_names"] == ["cat", "dog", "fox"]
    assert set(record["data"]["split_sha256"]) == {"train", "val", "test"}


def test_lightnings_log_lines_reach_the_jobs_log_when_it_was_imported_before_hydra(make_cfg, one_thread):
    """The pre-flight imports Lightning before Hydra sets up logging; Lightning then gives its loggers a
    console handler of their own and stops them propagating (its import-time rule, recreated here), so
    train.log (a handler on the root logger, as Hydra's) missed its lines until the job routes them."""
    lightning = logging.getLogger("pytorch_lightning")
    saved = lightning.propagate, list(lightning.handlers)
    own = logging.StreamHandler()
    lightning.addHandler(own)
    lightning.propagate = False
    seen: list[logging.LogRecord] = []
    job_log = logging.Handler(logging.INFO)
    job_log.emit = seen.append
    logging.getLogger().addHandler(job_log)
    try:
        record = train(make_cfg("backbone=simple_cnn", "dataset.classes=[0,1,2]", *TINY_RUN))
        routed = lightning.propagate and own not in lightning.handlers
    finally:
        logging.getLogger().removeHandler(job_log)
        lightning.propagate, lightning.handlers[:] = saved
    assert record["status"] == "ok", record["error"]
    stopped = [r.getMessage() for r in seen if r.name.startswith("pytorch_lightning")]
    assert any("`Trainer.fit` stopped" in m for m in stopped), stopped
    assert routed  # and not printed twice: Lightning's own console handler is gone


TINY_RUN = (
    "dataset.samples_per_class=10",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
)


def test_failed_run_records_the_error(make_cfg, tmp_path):
    record = train(make_cfg("dataset=image_folder", f"dataset.root={tmp_path / 'missing'}"))
    assert record["status"] == "failed"
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        saved["status"] == "failed"
        and "dataset.root=" in saved["error"]
        and "does not exist" in saved["error"]
    )


@pytest.mark.slow
def test_cli_exit_status_and_distinct_run_dirs(tmp_path):
    """Two runs started together get their own directories; a refused one exits 2 with a one-line error
    before Hydra creates its directory."""
    args = ["debug=fast", "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}"]
    logs = [tmp_path / f"log{i}" for i in range(2)]
    for log in logs:
        log.mkdir()
    pids = [fork_start(*args, cwd=REPO, logs=log) for log in logs]  # two processes (forks of this one)
    for pid, log in zip(pids, logs, strict=True):
        assert fork_wait(pid) == 0, (log / "stdout").read_text() + (log / "stderr").read_text()
    runs = sorted((tmp_path / "default" / "runs").iterdir())
    assert len(runs) == 2 and all((r / "results.json").is_file() for r in runs)

    bad = fork_cli("backbone.name=resnet1", f"hydra.run.dir={tmp_path / 'bad'}", cwd=REPO)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: Unknown backbone 'resnet1'") and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_ddp_cpu_scores_each_test_sample_once_and_agrees_with_one_process(tmp_path, make_cfg):
    run_dir = tmp_path / "ddp"
    result = run_cli(
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "dataset.classes=[0,1,2,3,4]",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        f"hydra.run.dir={run_dir}",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "ok" and record["config"]["trainer"]["devices"] == 2
    # No DistributedSampler padding: 2 processes scored the test set's samples exactly once between them.
    assert record["test_samples"] == record["data"]["sizes"]["test"] > 200
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran, in the same run directory
    assert [p.parent for p in Path(tmp_path).glob("**/results.json")] == [run_dir]  # only rank 0 wrote
    # One process evaluating the same weights gets the same test metrics.
    single = train(
        make_cfg(
            "dataset.classes=[0,1,2,3,4]", "trainer.max_epochs=1", f"ckpt_path={record['best_checkpoint']}"
        )
    )
    assert single["status"] == "ok", single["error"]
    assert single["metrics"]["test/acc"] == pytest.approx(record["metrics"]["test/acc"], abs=1e-6)
    assert single["test_samples"] == record["test_samples"]


@pytest.mark.parametrize(
    "strategy", ["linear_probe", "partial", "full", "scratch", "gradual_unfreeze", "lp_ft", "bitfit", "lora"]
)
def test_every_strategy_runs_on_the_embedded_default(make_cfg, strategy):
    record = train(make_cfg(f"strategy={strategy}", "debug=fast"))
    assert record["status"] == "ok", record["error"]
    assert record["strategy"] == strategy
    details = record["strategy_details"]
    assert details["name"] == strategy and len(details["stages"]) == 3
    assert "BatchNorm" in details["bn_policy"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the machine has a GPU")
def test_gpu_trainer_without_a_gpu_is_a_clear_error(make_cfg):
    record = train(make_cfg("trainer=gpu"))
    assert record["status"] == "failed"
    assert "no CUDA GPU" in record["error"] and "trainer=cpu" in record["error"]
