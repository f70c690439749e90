"""Kill a run at every named point, twice, resume it, and demand the uninterrupted result bit for bit.

Each run is a forked child of the test process (the real `train`, real Lightning), crashed with
`TRANSFERLAB_CRASH_AT` = `os._exit(137)`: no cleanup, no flush, exactly like `kill -9`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from transferlab.core.config import compose_train
from transferlab.core.faults import ENV
from transferlab.data.digits import materialize_digits
from transferlab.data.pack import pack
from transferlab.run.job import train

from .conftest import REPO, fork_cli, fork_start, fork_wait

pytestmark = pytest.mark.slow

# 6 classes x 10 images, batch 16: 4 steps per epoch, 3 epochs; a checkpoint every 2 steps as well.
RUN = [
    "trainer.deterministic=true",
    "seed=3",
    "dataset.classes=[0,1,2,3,4,5]",
    "dataset.samples_per_class=10",
    "dataset.val_source=pool",  # all 60 labelled images train: the step counts below rely on it
    "dataset.batch_size=16",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "callbacks=minimal",
    "callbacks.model_checkpoint.every_n_train_steps=2",
]


def run_forked(out: Path, *overrides: str, crash: str | None = None) -> int:
    """`train` in a forked child (crashed at `crash`); returns its exit code (137 = killed)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)  # OpenMP's thread pool does not survive fork; every run uses one thread
            if crash:
                os.environ[ENV] = crash
            else:
                os.environ.pop(ENV, None)
            code = 0 if train(compose_train([*RUN, *overrides], output_dir=out))["status"] == "ok" else 1
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    assert run_forked(out) == 0
    return out


def assert_same_as(run: Path, reference: Path) -> None:
    record = json.loads((run / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    assert record["status"] == "ok", record["error"]
    assert record["metrics"] == expected["metrics"]  # bit-identical test metrics
    assert record["export"]["sha256"] == expected["export"]["sha256"]  # and weights
    assert record["test_samples"] == expected["test_samples"]
    log = pd.read_csv(run / "csv" / "metrics.csv")
    reference_log = pd.read_csv(reference / "csv" / "metrics.csv")
    for column in ("val/acc", "train/acc", "test/acc"):  # every epoch's row once, same values
        assert log.dropna(subset=[column])[["epoch", "step", column]].values.tolist() == (
            reference_log.dropna(subset=[column])[["epoch", "step", column]].values.tolist()
        ), column
    assert not log.duplicated().any()
    assert list(run.rglob(".*.tmp")) == []  # no half-written file left behind
    assert not list((run / "checkpoints").glob("*-v1.ckpt"))


# point -> what the second kill, during the resumed run, waits for (counted in the resumed process)
POINTS = {
    "train_step@6": "train_step@3",  # mid-epoch, after a step checkpoint
    "checkpoint@3": "checkpoint@2",  # right after a checkpoint file is in place
    "val_step@2": "val_step@1",  # during validation
    "after_fit": "after_fit",  # between fit and test
    "test_step@1": "test_step@1",  # during test
    "write:results.json@2": "write:results.json@2",  # the final record written, not yet in place
    "write:backbone.safetensors": "write:backbone.safetensors",  # the export
    "csv_append@5": "csv_append@3",  # half a metrics.csv row written
}


@pytest.mark.parametrize("point", list(POINTS))
def test_killed_twice_at_any_point_resumes_exactly(reference, tmp_path, point):
    out = tmp_path / "run"
    assert run_forked(out, crash=point) == 137
    assert json.loads((out / "results.json").read_text())["status"] == "running"  # what a kill leaves
    assert run_forked(out, "resume=true", crash=POINTS[point]) == 137
    assert run_forked(out, "resume=true") == 0
    assert_same_as(out, reference)
    attempts = json.loads((out / "results.json").read_text())["attempts"]
    assert [a["status"] for a in attempts] == ["killed", "killed"]  # why it stopped is kept


def test_killed_during_source_pretraining_resumes_exactly(tmp_path):
    source = [
        "backbone.pretrained=source",
        "source.experiment=digits_source",
        "source.overrides=['trainer.max_epochs=2']",
    ]
    paths = lambda name: f"paths.cache_dir={tmp_path / name}"  # noqa: E731 - each its own source cache
    assert run_forked(tmp_path / "straight", *source, paths("a")) == 0
    killed = tmp_path / "killed"
    assert run_forked(killed, *source, paths("b"), crash="source:train_step@5") == 137
    assert run_forked(killed, *source, paths("b"), "resume=true", crash="source:train_step@3") == 137
    assert run_forked(killed, *source, paths("b"), "resume=true") == 0
    assert_same_as(killed, tmp_path / "straight")
    record = json.loads((killed / "results.json").read_text())
    assert (
        record["source"]["reused"] is False
        and record["weights_sha256"]
        == json.loads((tmp_path / "straight" / "results.json").read_text())["weights_sha256"]
    )


def test_killed_sweep_parent_resumes_the_sweep(tmp_path, reference):
    """The process running a -m sweep is killed inside its second job; the rerun finishes both."""
    sweep = tmp_path / "sweep"
    args = ["-m", *RUN, "seed=3,4", f"hydra.sweep.dir={sweep}"]
    # the sweep's process: a fork of this one (no second import of the libraries), crashed like the rest
    killed = fork_cli(
        *args, cwd=REPO, env={ENV: "train_step@16", "OMP_NUM_THREADS": "1"}
    )  # 2nd job, 4th step
    assert killed.returncode == 137
    first = json.loads((sweep / "0" / "results.json").read_text())
    assert (
        first["status"] == "ok"
        and json.loads((sweep / "1" / "results.json").read_text())["status"] == "running"
    )
    out = fork_cli(*args, "resume=true", cwd=REPO, env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert json.loads((sweep / "0" / "results.json").read_text())["started_at"] == first["started_at"]  # kept
    assert_same_as(sweep / "0", reference)
    assert json.loads((sweep / "1" / "results.json").read_text())["status"] == "ok"
    assert "Jobs: 2 (2 ok)." in (sweep / "report.md").read_text()


def _tail(logs: Path) -> str:
    """The end of a forked command's stdout and stderr."""
    return "".join((logs / name).read_text()[-3000:] for name in ("stdout", "stderr"))


def test_sigterm_saves_interrupted_state_and_resumes(tmp_path, reference):
    """The command in a fork of this process: SIGTERM and SIGINT are at their defaults there, as in a fresh
    interpreter (pytest and its xdist workers install no handler for them), so the job's own handling is
    what is tested."""
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    pid = fork_start(*RUN, f"hydra.run.dir={run_dir}", cwd=REPO, env={"OMP_NUM_THREADS": "1"}, logs=logs)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert os.waitpid(pid, os.WNOHANG)[0] == 0 and time.time() < deadline, _tail(logs)
        time.sleep(0.02)
    os.kill(pid, signal.SIGTERM)
    code = fork_wait(pid, timeout=120)
    record = json.loads((run_dir / "results.json").read_text())
    if code == 0:  # the run ended before the signal landed: nothing to test this time
        pytest.skip("the run finished before SIGTERM arrived")
    assert code == 143, _tail(logs)
    assert record["status"] == "interrupted" and "resume=true" in record["error"]
    assert run_forked(run_dir, "resume=true") == 0
    assert_same_as(run_dir, reference)


def test_l2_sp_run_killed_mid_epoch_resumes_exactly_with_its_reference_weights(tmp_path):
    """The regularizer's starting weights travel in checkpoints: resuming does not recompute them."""
    assert run_forked(tmp_path / "straight", "regularizer=l2_sp") == 0
    killed = tmp_path / "killed"
    assert run_forked(killed, "regularizer=l2_sp", crash="train_step@7") == 137
    assert run_forked(killed, "regularizer=l2_sp", "resume=true") == 0
    assert_same_as(killed, tmp_path / "straight")
    saved = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("regularizer.w0_") for k in saved)


def test_webdataset_run_killed_mid_epoch_resumes_exactly(tmp_path):
    """Shards stream in a seeded order per epoch; the resumed epoch skips the batches already trained."""
    shards = tmp_path / "shards"
    pack(materialize_digits(tmp_path / "digits"), shards, shard_size=100)
    data = [
        "dataset=webdataset",
        f"dataset.urls={shards}",
        "dataset.image_size=32",
    ]
    assert run_forked(tmp_path / "straight", *data) == 0
    killed = tmp_path / "killed"
    assert run_forked(killed, *data, crash="train_step@7") == 137  # after a step checkpoint mid-epoch 2
    assert run_forked(killed, *data, "resume=true") == 0
    assert_same_as(killed, tmp_path / "straight")
