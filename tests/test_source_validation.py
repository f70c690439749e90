"""experiment=source_selection validate=true: every candidate tuned and tested through the Optuna sweeper
(a real Hydra multirun), and each score's weighted tau, Pearson r and top-1 regret against the tuned test
accuracy, with bootstrap intervals over seeds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from transferlab.core.errors import TransferlabError
from transferlab.sources.agreement import agreement, correlation
from transferlab.sources.validate import CSV, JSON, RUNS, arm_name, arms

from .conftest import compose_cfg, fork_cli


def test_agreement_of_a_right_and_a_reversed_ranking():
    names = ["a", "b", "c"]
    accs = [np.array([0.90, 0.92, 0.91]), np.array([0.80, 0.82]), np.array([0.50, 0.52])]
    right = agreement(names, [3.0, 2.0, 1.0], accs, n_boot=500)
    assert right["tau"] == pytest.approx(1.0) and right["tau_low"] == right["tau_high"] == pytest.approx(1.0)
    assert right["r"] == pytest.approx(stats.pearsonr([3, 2, 1], [0.91, 0.81, 0.51]).statistic)
    assert right["r_low"] <= right["r"] <= right["r_high"] and right["r_low"] > 0.9
    assert right["regret"] == 0.0 and right["regret_high"] == 0.0
    assert (right["favourite"], right["best"], right["seeds"]) == ("a", "a", 2)
    wrong = agreement(names, [1.0, 2.0, 3.0], accs, n_boot=500)
    assert wrong["tau"] == pytest.approx(-1.0) and wrong["r"] == pytest.approx(-right["r"])
    assert wrong["regret"] == pytest.approx(0.91 - 0.51) and wrong["favourite"] == "c"
    assert 0.38 <= wrong["regret_low"] <= wrong["regret"] <= wrong["regret_high"] <= 0.42


def test_overlapping_seeds_give_wide_intervals():
    accs = [np.array([0.60, 0.95]), np.array([0.70, 0.80])]  # means 0.775 and 0.75: the order is unsure
    out = agreement(["a", "b"], [2.0, 1.0], accs, n_boot=2000)
    assert out["tau"] == pytest.approx(1.0) and out["tau_low"] == pytest.approx(-1.0)
    assert out["regret"] == 0.0 and out["regret_high"] > 0.1
    # the same resamples for r (seeded): a Pearson r of two points is +1 or -1
    r = correlation([2.0, 1.0], accs, n_boot=2000)
    assert (r["r"], r["r_low"], r["r_high"]) == (pytest.approx(1.0), pytest.approx(-1.0), pytest.approx(1.0))


def test_arms_are_candidates_by_strategies_and_the_scratch_baseline():
    from transferlab.sources.candidates import Candidate

    near = Candidate("zoo:near", {"name": "simple_cnn", "pretrained": "/runs/near", "kwargs": {}})
    rnd = Candidate("random", {"name": "simple_cnn", "pretrained": False, "kwargs": {}})
    found = arms([near, rnd], ["linear_probe", "full"], scratch=True)
    assert list(found) == [
        "scratch",
        "zoo_near-linear_probe",
        "zoo_near-full",
        "random-linear_probe",
        "random-full",
    ]
    assert found["zoo_near-full"] == (
        "zoo:near",
        "full",
        ["strategy=full", "backbone.name=simple_cnn", "backbone.pretrained=/runs/near"],
    )
    assert found["random-linear_probe"][2][-1] == "backbone.pretrained=false"
    assert found["scratch"][2] == ["strategy=scratch", "backbone.pretrained=false"]
    with pytest.raises(TransferlabError, match="give the same arm name zoo_near-full"):
        arms([near, Candidate("zoo_near", near.backbone)], ["full"])


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    from transferlab.run.job import train

    out = tmp_path_factory.mktemp("source") / "digits04"
    record = train(compose_cfg(out, ["experiment=digits_source", "trainer.limit_train_batches=3"]))
    assert record["status"] == "ok", record["error"]
    return out


@pytest.mark.slow
def test_validate_tunes_each_candidate_and_scores_the_ranking(source_run, tmp_path):
    out = tmp_path / "sel"
    done = fork_cli(  # the selection's own process is a fork; its validation sweep a fresh process
        f"selection.candidates=[{source_run},random]",
        "selection.scores=[logme,leep,knn]",
        "validate=true",
        "validation.strategies=[linear_probe]",
        "validation.scratch=false",
        "validation.bootstrap=300",
        "tuning.n_trials=1",
        "tuning.final_seeds=[100,101,102]",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        module="transferlab.select",
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = pd.read_csv(out / RUNS)
    assert sorted(runs["candidate"].unique()) == ["digits04", "random"]
    assert runs.groupby("candidate")["seed"].apply(sorted).tolist() == [[100, 101, 102]] * 2
    sweep = out / "validation"
    assert (sweep / "optimization_results.yaml").is_file() and (sweep / "report.md").is_file()
    records = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    finals = [r for r in records if r["tuning"]["phase"] == "final"]
    trials = [r for r in records if r["tuning"]["phase"] == "trial"]
    assert len(finals) == 6 and len(trials) == 2  # one trial per candidate: the same budget
    assert {r["tuning"]["arm"] for r in trials} == {
        arm_name("digits04", "linear_probe"),
        "random-linear_probe",
    }
    truth = {
        c: np.mean([r["metrics"]["test/acc"] for r in finals if r["tuning"]["arm"].startswith(c)])
        for c in ("digits04", "random")
    }
    table = pd.read_csv(out / CSV).set_index("score")
    assert table["strategy"].unique().tolist() == ["linear_probe"]
    for score in ("logme", "knn"):
        row = table.loc[score]
        assert row["candidates"] == 2 and row["seeds"] == 3
        assert abs(row["tau"]) == pytest.approx(1.0) and abs(row["r"]) == pytest.approx(1.0)  # two: an order
        assert row["tau_low"] <= row["tau"] <= row["tau_high"] and row["r_low"] <= row["r"] <= row["r_high"]
        assert row["best_acc"] == pytest.approx(max(truth.values()))
        assert row["favourite_acc"] == pytest.approx(truth[row["favourite"]])
        assert row["regret"] == pytest.approx(row["best_acc"] - row["favourite_acc"])
        assert 0.0 <= row["regret_low"] <= row["regret_high"] <= 1.0
    assert (
        table.loc["leep", "candidates"] == 1 and "fewer than 2" in table.loc["leep", "note"]
    )  # random: no head
    facts = json.loads((out / JSON).read_text())
    assert "hparams_search=optuna" in facts["command"] and facts["tuning"]["final_seeds"] == [100, 101, 102]
    assert [a["score"] for a in facts["agreement"]] == ["logme", "leep", "knn"]
    assert "tau" in done.stdout and "regret" in done.stdout


def test_the_demo_says_how_each_source_stands_against_scratch():
    from transferlab.demo_sources import verdicts

    columns = ["arm", "mean", "ci_low", "ci_high", "baseline", "diff_mean", "p_holm"]
    comparison = pd.DataFrame(
        [
            ["zoo_inverted-linear_probe", 0.85, 0.80, 0.90, "scratch", 0.20, 0.004],
            ["scratch", 0.65, 0.55, 0.75, "scratch", np.nan, np.nan],
            ["zoo_near-linear_probe", 0.46, 0.33, 0.59, "scratch", -0.19, 0.03],
            ["zoo_random-linear_probe", 0.62, 0.48, 0.75, "scratch", -0.03, 0.22],
        ],
        columns=columns,
    )
    lines = verdicts(comparison)
    assert "significantly better than scratch (+0.200, Holm p = 0.004)" in lines[0]
    assert "<- no transfer" in lines[1]
    assert "significantly worse than scratch" in lines[2] and "tied with scratch" in lines[3]
