"""Selection on validation only, and the Optuna sweeper on the real stack (Hydra, Lightning, Optuna)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from transferlab.run.job import train
from transferlab.train import task
from transferlab.tuning.storage import open_storage

from .conftest import REPO, fork_cli, fork_start, run_cli

TINY = ["dataset.classes=[0,1,2]", "trainer.max_epochs=2"]
QUIET = ["trainer.enable_progress_bar=false", "callbacks=minimal"]


def val_log(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "csv" / "metrics.csv").dropna(subset=["val/acc"])


@pytest.mark.parametrize(("metric", "mode"), [("val/acc", "max"), ("val/loss", "min")])
def test_task_function_returns_the_selected_validation_metric(make_cfg, tmp_path, metric, mode):
    cfg = make_cfg(*TINY, f"optimized_metric={metric}", f"optimized_mode={mode}")
    value = task(cfg)
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    logged = val_log(tmp_path / "run")[metric]
    expected = logged.max() if mode == "max" else logged.min()
    assert value == pytest.approx(expected) == record["objective"]["value"]
    assert record["objective"] == {
        "name": metric,
        "mode": mode,
        "value": value,
        "selected_at": "best checkpoint",
    }
    assert "test/acc" in record["metrics"]  # a plain run is still tested once, on the selected checkpoint


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("test/acc", "optimized_metric=test/acc: is a test metric"),
        ("test/loss", "use the validation metric, optimized_metric=val/loss"),
        ("train/loss", "is not a validation metric"),
        ("val/accuracy", "is never logged. Did you mean val/acc"),
    ],
)
def test_objective_must_be_a_logged_validation_metric(make_cfg, metric, message):
    record = train(make_cfg(*TINY, f"optimized_metric={metric}"))
    assert record["status"] == "failed" and message in record["error"]
    assert "\n" not in record["error"] and record["train_seconds"] is None  # refused before training


def test_test_false_never_touches_the_test_set(make_cfg, tmp_path):
    record = train(make_cfg(*TINY, "test=false"))
    assert record["status"] == "ok" and record["objective"]["value"] is not None
    assert not any(k.startswith("test/") for k in record["metrics"])
    log = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    assert not any(c.startswith("test/") for c in log.columns)


def trial_records(sweep: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    return sorted(records, key=lambda r: int(Path(r["output_dir"]).name))


@pytest.mark.slow
def test_demo_tunes_on_validation_and_tests_fresh_seeds_once(tmp_path):
    """`make demo` (experiment=tuned_comparison): source pretraining, every arm tuned equally on validation,
    the best of each re-run on fresh seeds and tested once, one report."""
    out = run_cli(
        "strategy=linear_probe,scratch",
        "tuning.n_trials=2",
        "tuning.final_seeds=[100,101]",
        "trainer.max_epochs=2",
        "source.overrides=['trainer.max_epochs=2']",
        # the jobs in the sweep's process (the demo's two joblib workers would import the libraries again
        # each; the joblib launcher is tested in test_sweep and with Optuna below)
        "hydra/launcher=basic",
        cwd=REPO,
        module="transferlab.demo",
        env={"TRANSFERLAB_OUTPUTS": str(tmp_path)},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Source task digits_source (digits 0-4)" in out.stdout
    assert "<- no transfer (random init)" in out.stdout and "each strategy tuned equally" in out.stdout
    assert "tuning.n_trials=30" in out.stdout  # the command for the paper-grade budget
    (sweep,) = (p.parent for p in tmp_path.glob("tuned_comparison/multiruns/*/report.md"))
    assert f"Report: {sweep / 'report.md'}" in out.stdout

    records = trial_records(sweep)
    trials = [r for r in records if r["tuning"]["phase"] == "trial"]
    finals = [r for r in records if r["tuning"]["phase"] == "final"]
    assert len(trials) == 4 and len(finals) == 4
    for r in trials:  # tuning never looks at the test set
        assert r["seed"] == 0 and not any(k.startswith("test/") for k in r["metrics"])
        assert r["objective"]["name"] == "val/acc" and r["config"]["test"] is False
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    for arm in ("linear_probe", "scratch"):
        entry = results["arms"][f"tuned_comparison/{arm}"]
        ok = [r for r in trials if r["tuning"]["arm"] == arm and r["status"] == "ok"]
        assert entry["best_value"] == pytest.approx(max(r["objective"]["value"] for r in ok))
        assert entry["n_trials"] == 2 and "optimizer.lr" in entry["best_params"]
        mine = [r for r in finals if r["tuning"]["arm"] == arm]
        assert sorted(r["seed"] for r in mine) == [100, 101]  # fresh seeds, not the tuning seed
        for r in mine:
            assert "test/acc" in r["metrics"] and r["status"] == "ok"
            assert r["config"]["optimizer"]["lr"] == pytest.approx(entry["best_params"]["optimizer.lr"])
    report = (sweep / "report.md").read_text()
    assert "Tuned: every arm was tuned with the same budget (2 Optuna trials each" in report
    assert "## Tuning (validation only; part of each arm's cost)" in report and "optimizer.lr=" in report
    comparison = pd.read_csv(sweep / "comparison.csv")
    assert sorted(comparison["arm"]) == ["linear_probe", "scratch"] and set(comparison["n"]) == {2}
    assert (sweep / "tuning_progress.png").stat().st_size > 1000


@pytest.mark.slow
def test_pruned_trials_in_parallel_processes_reach_the_study_on_disk(tmp_path):
    sweep = tmp_path / "sweep"
    out = fork_cli(  # the sweep's process is a fork of this one; joblib's trial processes are fresh
        "hparams_search=optuna",
        *TINY,
        "tuning.n_trials=2",
        "tuning.n_jobs=2",
        "hydra/launcher=local",  # joblib: each trial in its own process
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=1.5",  # every trial is pruned after its first validation
        f"hydra.sweep.dir={sweep}",
        *QUIET,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = trial_records(sweep)
    assert [r["status"] for r in records] == ["pruned", "pruned"]
    assert len({r["pid"] for r in records}) == 2 and os.getpid() not in {r["pid"] for r in records}
    study = optuna.load_study(study_name="default", storage=open_storage(sweep / "optuna.journal"))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)  # reported from the trial processes
    assert "Jobs: 2 (2 pruned)." in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_interrupted_study_resumes_without_repeating_finished_trials(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hparams_search=optuna",
        *TINY,
        "trainer.max_epochs=3",
        "tuning.n_trials=4",
        "tuning.prune=false",
    ]
    args += [f"hydra.sweep.dir={sweep}", *QUIET]
    pid = fork_start(*args, cwd=REPO)  # the sweep's process: a fork of this one, as killable as any
    deadline = time.time() + 240
    while len([p for p in sweep.glob("*/results.json") if '"ok"' in p.read_text()]) < 2:
        ended = os.waitpid(pid, os.WNOHANG)[0]
        assert not ended and time.time() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # the sweep process and the trial it runs die together
    os.waitpid(pid, 0)
    before = {r["tuning"]["trial"]: r for r in trial_records(sweep)}
    assert len(before) == 2

    out = fork_cli(*args, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    after = [r for r in trial_records(sweep)]
    for number, record in before.items():  # finished trials kept, not run again
        again = [r for r in after if r["tuning"]["trial"] == number]
        assert len(again) == 1 and again[0]["started_at"] == record["started_at"]
    study = optuna.load_study(study_name="default", storage=open_storage(sweep / "optuna.journal"))
    counted = [t for t in study.trials if not t.user_attrs.get("stale")]
    assert len(counted) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    stale = [t for t in study.trials if t.user_attrs.get("stale")]
    assert len(stale) <= 1  # the trial the kill cut off (if it had started) ...
    for t in stale:  # ... is run again with the parameters it had drawn (all, unless the kill came mid-draw)
        retry = [c for c in counted if c.user_attrs.get("retry_of") == t.number]
        assert len(retry) == 1 and t.params.items() <= retry[0].params.items()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["details"]["n_trials"] == 4
    assert results["best_value"] == pytest.approx(max(t.value for t in counted))
