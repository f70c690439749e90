"""Sweeps end to end through the real CLI: report, failures, launchers, notebook."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from filelock import FileLock
from nbclient import NotebookClient

from transferlab.report import build_report

from .conftest import REPO, fork_cli, run_cli, write_image_folder

pytestmark = pytest.mark.slow
QUIET = ["trainer.enable_progress_bar=false", "callbacks=minimal"]


def sweep_dirs(log_dir: Path, experiment: str) -> list[Path]:
    return sorted((log_dir / experiment / "multiruns").iterdir())


def results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]


def run_sweep(log_dir: Path, *args: str, experiment: str = "default", expect: int = 0, fresh: bool = False):
    """`python -m transferlab.train -m ARGS` writing under `log_dir`; returns (process, sweep directory).
    The sweep's own process is a fork of this one (no second import of the libraries) unless `fresh`;
    the processes its launcher starts are processes either way."""
    cli = run_cli if fresh else fork_cli
    out = cli("-m", *args, f"paths.log_dir={log_dir}", *QUIET, cwd=REPO, timeout=600)
    assert out.returncode == expect, out.stdout[-3000:] + out.stderr[-3000:]
    (sweep,) = sweep_dirs(log_dir, experiment)
    return out, sweep


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """compare_strategies with 2 strategies x 2 seeds and short training, logged to W&B offline too; run
    once per test session: under pytest-xdist the first worker that needs it runs it, the other reuses it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the directory every worker's own directory is in
    built = shared / "tiny_sweep.done"
    with FileLock(shared / "tiny_sweep.lock"):
        if not built.is_file():
            out, sweep = run_sweep(
                shared / "tiny_sweep",
                "experiment=compare_strategies",
                "logger=many",
                "strategy=linear_probe,full",
                "seed=0,1",
                "trainer.max_epochs=2",
                "source.overrides=['trainer.max_epochs=2']",
                experiment="compare_strategies",
            )
            assert "Report: " in out.stdout
            built.write_text(str(sweep))
    return Path(built.read_text())


def test_report_has_one_row_per_job_and_the_right_means(tiny_sweep):
    rows = pd.read_csv(tiny_sweep / "results.csv")
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    assert sorted(zip(rows["strategy"], rows["seed"], strict=True)) == [
        ("full", 0),
        ("full", 1),
        ("linear_probe", 0),
        ("linear_probe", 1),
    ]
    report = (tiny_sweep / "report.md").read_text()
    comparison = pd.read_csv(tiny_sweep / "comparison.csv").set_index("arm")
    for strategy in ("linear_probe", "full"):
        accs = [r["metrics"]["test/acc"] for r in results(tiny_sweep) if r["strategy"] == strategy]
        assert len(accs) == 2
        assert f"{sum(accs) / 2:.3f} ± " in report  # mean with its interval, per strategy
        assert comparison.at[strategy, "mean"] == pytest.approx(sum(accs) / 2)
        assert comparison.at[strategy, "n"] == 2
    # Two seeds cannot separate two arms after correction: the report says so instead of naming a best.
    assert "No single winner" in report and "(winner)" not in report
    assert "Untuned: every arm ran with the same hyperparameters (optimizer.lr=0.002)" in report
    assert "fewer than 5 seeds" in report
    for png in ("test_acc_by_group.png", "test_acc_vs_trainable_params.png", "val_curves.png"):
        assert (tiny_sweep / png).stat().st_size > 1000
    # Every job saw the same test data, and the same seed the same training split.
    assert rows["test_data_sha256"].nunique() == 1
    assert "every job with the same seed trained on the same split" in report


def test_report_is_the_same_when_rerun(tiny_sweep):
    before = {p: (tiny_sweep / p).read_bytes() for p in ("report.md", "results.csv")}
    out = fork_cli(str(tiny_sweep), cwd=REPO, module="transferlab.report")
    assert out.returncode == 0, out.stderr
    assert {p: (tiny_sweep / p).read_bytes() for p in before} == before


def test_notebook_executes_on_the_sweep(tiny_sweep, monkeypatch):
    notebook = nbformat.read(REPO / "notebooks" / "compare_strategies.ipynb", as_version=4)
    assert all(
        not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"
    )  # stripped in git
    monkeypatch.setenv("TRANSFERLAB_SWEEP", str(tiny_sweep))
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in notebook.cells
        for o in c.get("outputs", [])
    )
    assert "4 jobs, 4 ok" in text and "linear_probe" in text
    assert any("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))


def test_wandb_runs_are_grouped_by_sweep_and_strategy(tiny_sweep, monkeypatch):
    from transferlab.report import build_wandb_report, wandb_groups, wandb_report

    from .wandb_offline import read_offline_run

    runs = [read_offline_run(p) for p in sorted(tiny_sweep.glob("*/wandb/offline-run-*"))]
    assert len(runs) == 4 and len({r.run["id"] for r in runs}) == 4  # one run per job, never merged
    assert {r.run["group"] for r in runs} == {f"compare_strategies/{tiny_sweep.name}"}
    assert sorted(r.run["job_type"] for r in runs) == ["full", "full", "linear_probe", "linear_probe"]
    report = build_report(tiny_sweep)
    assert wandb_groups(report) == [("transferlab", f"compare_strategies/{tiny_sweep.name}")]
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert "wandb sync" in wandb_report(report)
    wr = pytest.importorskip("wandb_workspaces.reports.v2")
    built = build_wandb_report(report, "my-team", "transferlab", [f"compare_strategies/{tiny_sweep.name}"])
    grids = [b for b in built.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 1 and tiny_sweep.name in grids[0].runsets[0].filters


def test_failing_job_is_isolated_and_reported(tmp_path):
    out, sweep = run_sweep(
        tmp_path,
        "backbone=simple_cnn,vit_tiny",
        "dataset.image_size=8",  # digits' own size; too small for a vision transformer's 16-pixel patches
        "dataset.classes=[0,1,2]",
        "trainer.max_epochs=1",
        expect=1,
    )
    assert "1 job(s) failed: 1" in out.stderr
    statuses = {r["backbone"]: r["status"] for r in results(sweep)}
    assert statuses == {"simple_cnn": "ok", "vit_tiny_patch16_224": "failed"}
    report = (sweep / "report.md").read_text()
    assert "## Failed jobs" in report and "dataset.image_size=8 is too small for backbone" in report
    assert "simple_cnn" in report


def test_joblib_launcher_runs_jobs_in_parallel_with_dataloader_workers(tmp_path):
    root = write_image_folder(tmp_path / "images")
    _, sweep = run_sweep(
        tmp_path / "logs",
        "hydra/launcher=local",
        "strategy=linear_probe,full",
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.image_size=32",
        "dataset.num_workers=1",
        "trainer.max_epochs=12",  # long enough that start-up skew cannot hide the overlap
    )
    jobs = results(sweep)
    assert [r["status"] for r in jobs] == ["ok", "ok"]
    assert jobs[0]["pid"] != jobs[1]["pid"] != os.getpid()
    (a0, a1), (b0, b1) = ((r["started_at"], r["started_at"] + r["wall_seconds"]) for r in jobs)
    assert a0 < b1 and b0 < a1, "the two jobs did not overlap in time"
    assert (sweep / "report.md").is_file()


def test_submitit_local_launcher_runs_a_job(tmp_path):
    _, sweep = run_sweep(
        tmp_path, "hydra/launcher=submitit_local", "debug=fast", "hydra.launcher.timeout_min=10"
    )
    (job,) = results(sweep)
    assert job["status"] == "ok" and job["pid"] != os.getpid()
    assert (sweep / ".submitit").is_dir()
    assert build_report(sweep).rows["status"].tolist() == ["ok"]


def test_ray_launcher_runs_the_sweep_on_a_local_ray_cluster(tmp_path):
    """hydra/launcher=ray (Hydra's Ray launcher plugin): Ray starts a local cluster and runs each job in a
    Ray worker process (with one CPU, both in one worker, as on a cluster smaller than the sweep); results
    and the report are the same as with any launcher."""
    out, sweep = run_sweep(
        tmp_path,
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=1",  # one worker process runs both jobs, one after the other
        "+hydra.launcher.ray.init.include_dashboard=false",
        "debug=fast",
        "strategy=linear_probe,full",
        fresh=True,  # Ray's driver: a process of its own (its exit shuts the local cluster down; a fork's
        # os._exit leaves Ray's dashboard and runtime-env agents running)
    )
    jobs = results(sweep)
    assert [(r["status"], r["strategy"]) for r in jobs] == [("ok", "linear_probe"), ("ok", "full")]
    for job in jobs:  # Ray prefixes what its task workers print with the task and the worker's pid
        assert f"(_run_job pid={job['pid']})" in out.stdout + out.stderr
    rows = build_report(sweep).rows
    assert sorted(rows["strategy"]) == ["full", "linear_probe"] and set(rows["status"]) == {"ok"}


def test_ddp_jobs_inside_a_multirun_fork_their_ranks_from_one_fork_server(tmp_path):
    """Lightning's script launcher would re-run the whole sweep per rank; inside -m the ranks of every
    trainer call of every job fork from one fork server (one fresh interpreter for all 8 ranks here: it
    was 8 spawned ones), and get the job's seed, deterministic flag and own copy of the weights as spawned
    ranks would."""
    _, sweep = run_sweep(
        tmp_path,
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "trainer.deterministic=true",
        "dataset.classes=[0,1,2]",
        "seed=0,1",  # the fork server starts in job 0: job 1's ranks must not keep job 0's seed
        # The sweep's process is fresh, as every launcher's job process is: in a fork of this test process
        # (which has asked torch about CUDA, as any Trainer does) Lightning refuses to start ranks.
        fresh=True,
    )
    jobs = results(sweep)
    assert [(j["status"], j["seed"]) for j in jobs] == [("ok", 0), ("ok", 1)]
    assert all(j["test_samples"] == j["data"]["sizes"]["test"] for j in jobs)  # each test sample once
    servers, ranks = set(), set()
    for num, job in enumerate(jobs):
        assert "start_method=forkserver" in (sweep / str(num) / "train.log").read_text()
        lines = [
            line.split("DDP rank ", 1)[1]
            for name in ("train.log", "train_ddp_process_1.log")
            for line in (sweep / str(num) / name).read_text().splitlines()
            if "DDP rank " in line
        ]
        calls = sorted((rank, call) for rank, call, *_ in (line.split(" ", 2) for line in lines))
        assert calls == [
            ("0", "(trainer.fit):"),
            ("0", "(trainer.test):"),
            ("1", "(trainer.fit):"),
            ("1", "(trainer.test):"),
        ]
        for line in lines:  # "R (trainer.X): pid P, forked from the fork server S; PL_GLOBAL_SEED=N, ..."
            seed_and_state = f"PL_GLOBAL_SEED={job['seed']}, deterministic=True, tensors shared with other"
            # own weights (not every rank's steps), and a fork in which CUDA would initialize: the fork
            # server never asked the driver anything (even torch.cuda.is_available() would spoil that)
            assert line.endswith(f"{seed_and_state} processes: 0, CUDA usable after the fork: True"), line
            ranks.add(int(line.split(" pid ", 1)[1].split(",")[0]))
            servers.add(int(line.split("fork server ", 1)[1].split(";")[0]))
    assert len(ranks) == 8 and len(servers) == 1 and not servers & {jobs[0]["pid"], os.getpid()}
    assert jobs[0]["pid"] == jobs[1]["pid"]  # one job process: its fork server served both jobs


def test_data_size_sweep_is_reported_against_data_size(tmp_path):
    _, sweep = run_sweep(
        tmp_path,
        "experiment=data_efficiency",
        "dataset.samples_per_class=5,10",
        "strategy=linear_probe,full",
        "seed=0",
        "trainer.max_epochs=1",
        "source.overrides=['trainer.max_epochs=1']",
        experiment="data_efficiency",
    )
    report = (sweep / "report.md").read_text()
    assert "Compared by: strategy, dataset.samples_per_class." in report
    # Strategies are compared within each data size (different sizes are different data: never paired).
    assert "## test/acc by strategy: 5\n" in report and "## test/acc by strategy: 10\n" in report
    assert (sweep / "test_acc_vs_samples_per_class.png").stat().st_size > 1000
    sizes = sorted(r["data"]["sizes"]["train"] for r in results(sweep))
    assert sizes == [20, 20, 40, 40]  # 5 classes x samples_per_class, less the validation drawn from it
    assert sorted(r["data"]["labels_used"] for r in results(sweep)) == [25, 25, 50, 50]
