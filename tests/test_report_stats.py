"""The report's statistics on synthetic sweeps with known answers (no training: results.json files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from benchmarks.report_null import run as simulate_sweeps
from transferlab.report import build_report
from transferlab.report.stats import UnpairedDataError, compare_arms, holm, paired_test


def write_sweep(
    root: Path,
    scores: dict[str, list[float]],
    train_hash=lambda arm, seed: f"train{seed}",
    block=None,
    experiment="default",
) -> Path:
    """A sweep directory of results.json files: one job per (arm, seed) with the given test accuracy."""
    job = len(list(root.glob("*/results.json"))) if root.exists() else 0
    for arm, values in scores.items():
        for seed, acc in enumerate(values):
            folder = root / str(job)
            folder.mkdir(parents=True)
            overrides = [f"strategy={arm}", f"seed={seed}"] + ([f"backbone={block}"] if block else [])
            record = {
                "status": "ok",
                "error": None,
                "strategy": arm,
                "backbone": block or "simple_cnn",
                "dataset": "digits",
                "experiment": experiment,
                "seed": seed,
                "metrics": {"test/acc": acc, "test/f1_macro": acc, "val/acc_best": acc},
                "overrides": overrides,
                "config": {
                    "optimizer": {"lr": 0.002},
                    "report": {"metric": "test/acc", "baseline": None, "alpha": 0.05, "test": "t"},
                },
                "data": {
                    "split_sha256": {"train": train_hash(arm, seed), "val": f"val{seed}", "test": "test"}
                },
                "trainable_params": 1000,
                "train_seconds": 1.0,
                "wall_seconds": 1.5,
                "peak_memory_mb": 100.0,
            }
            (folder / "results.json").write_text(json.dumps(record))
            job += 1
    return root


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 28):  # statsmodels runs a full garbage collection per call: keep it to a few
        p = rng.uniform(0, 0.3, size=size)
        assert np.allclose(holm(p), multipletests(p, method="holm")[1])
    assert np.isnan(holm([0.01, np.nan])[1]) and holm([0.01, np.nan])[0] == pytest.approx(0.01)


def test_paired_t_test_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.05, 6), rng.normal(0.78, 0.05, 6)
    result = paired_test(a, b)
    reference = scipy_stats.ttest_rel(a, b)
    assert result.p_value == pytest.approx(reference.pvalue)
    low, high = reference.confidence_interval()
    assert (result.diff_low, result.diff_high) == (pytest.approx(low), pytest.approx(high))
    assert paired_test(a, a).p_value == 1.0  # identical arms: no evidence at all
    assert paired_test(a, b, test="wilcoxon").p_value == pytest.approx(scipy_stats.wilcoxon(a - b).pvalue)


def test_a_large_effect_names_the_winner(tmp_path):
    seeds = np.array([0.0, 0.03, -0.02, 0.01, -0.01])  # shared per-seed effect: pairing removes it
    sweep = write_sweep(
        tmp_path / "sweep",
        {
            "full": list(0.95 + seeds),
            "scratch": list(0.80 + seeds + 0.001),
            "linear_probe": list(0.70 + seeds - 0.002),
        },
    )
    report = build_report(sweep)
    text = (sweep / "report.md").read_text()
    assert "**Winner: full**" in text and "**full** (winner)" in text
    table = pd.read_csv(sweep / "comparison.csv").set_index("arm")
    for column in (
        "n",
        "mean",
        "ci_low",
        "ci_high",
        "baseline",
        "diff_mean",
        "diff_ci_low",
        "diff_ci_high",
        "p_value",
        "p_holm",
        "tied_with_best",
    ):
        assert column in table
    assert table.at["full", "baseline"] == "scratch"  # the default baseline when present
    assert table.at["full", "diff_mean"] == pytest.approx(0.149)
    assert table.at["full", "p_holm"] < 0.05 and table.at["linear_probe", "p_holm"] < 0.05
    assert list(table["tied_with_best"]) == [True, False, False]
    assert report.analysis.family_size == 3  # every pair, corrected together
    assert (
        "Against the baseline scratch: significantly better: full; significantly worse: linear_probe." in text
    )


def test_identical_arms_are_reported_as_a_tie(tmp_path):
    rng = np.random.default_rng(3)
    scores = {arm: list(0.9 + rng.normal(0, 0.01, 5)) for arm in ("a", "b", "c", "d")}
    sweep = write_sweep(tmp_path / "sweep", scores)
    build_report(sweep, baseline="d")
    text = (sweep / "report.md").read_text()
    assert "No single winner" in text and "Winner" not in text
    table = pd.read_csv(sweep / "comparison.csv")
    assert table["tied_with_best"].all() and (table["p_holm"].dropna() > 0.05).all()
    assert "statistically indistinguishable from" in text


def test_unpaired_data_is_refused_with_a_clear_message(tmp_path):
    sweep = write_sweep(
        tmp_path / "sweep",
        {"full": [0.9, 0.91, 0.92], "scratch": [0.8, 0.81, 0.82]},
        train_hash=lambda arm, seed: f"{arm}-{seed}" if seed == 1 else f"train{seed}",
    )
    build_report(sweep)
    text = (sweep / "report.md").read_text()
    assert "Paired comparison refused: cannot pair arms: for seed 1 the runs saw different data" in text
    assert "run every arm with the same dataset settings" in text
    assert pd.read_csv(sweep / "comparison.csv")["p_value"].isna().all()  # no test was run
    frame = pd.DataFrame(
        {"arm": ["a", "b"], "seed": [0, 0], "value": [1.0, 2.0], "train_data_sha256": ["x", "y"]}
    )
    with pytest.raises(UnpairedDataError, match="seed 0"):
        from transferlab.report.stats import paired_matrix

        paired_matrix(frame, "arm", "seed", "value", ("train_data_sha256",))
    assert compare_arms(frame, hash_columns=("train_data_sha256",)).refused


def test_second_factor_gets_friedman_and_a_cd_diagram(tmp_path):
    sweep = tmp_path / "sweep"
    for shift, backbone in ((0.0, "resnet18"), (0.05, "convnext_atto"), (-0.03, "vit_tiny")):
        write_sweep(
            sweep,
            {
                a: [v + shift + 0.01 * s for s in range(3)]
                for a, v in (("full", 0.9), ("lora", 0.85), ("scratch", 0.8))
            },
            block=backbone,
        )
    report = build_report(sweep)
    text = (sweep / "report.md").read_text()
    assert "Compared by: strategy, backbone." in text
    assert "## Across backbone (Friedman test, Demšar 2006)" in text
    assert report.analysis.friedman["avg_ranks"] == {"full": 1.0, "lora": 2.0, "scratch": 3.0}
    assert (sweep / "cd_diagram.png").stat().st_size > 1000
    assert len(pd.read_csv(sweep / "comparison.csv")) == 9  # 3 backbones x 3 arms


def test_family_wise_error_stays_below_alpha_under_the_null():
    result = simulate_sweeps(
        sweeps=200, arms=6, seeds=5, effect=0.03, noise=0.005, seed_sd=0.03, alpha=0.05, seed=7
    )
    assert result["family_wise_error"] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200)
    assert result["power"] > 0.5  # and a real effect is found


def test_experiments_swept_together_are_reported_per_experiment(tmp_path):
    sweep = tmp_path / "all"
    write_sweep(
        sweep / "compare", {"full": [0.9, 0.91, 0.92], "scratch": [0.8, 0.81, 0.8]}, experiment="compare"
    )
    write_sweep(sweep / "depth", {"full": [0.7, 0.71, 0.72], "scratch": [0.6, 0.61, 0.6]}, experiment="depth")
    build_report(sweep)
    text = (sweep / "report.md").read_text()
    assert "Compared by: strategy, experiment." in text
    assert "## test/acc by strategy: compare" in text and "## test/acc by strategy: depth" in text


def test_diverged_jobs_are_listed_apart_from_failed_ones(tmp_path):
    sweep = write_sweep(tmp_path / "s", {"full": [0.9, 0.91, 0.92], "scratch": [0.8, 0.81, 0.8]})
    for job, status, error in (
        ("0", "diverged", "Training diverged: the loss became nan at step 3"),
        ("1", "failed", "boom"),
    ):
        path = sweep / job / "results.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps(record | {"status": status, "error": error}))
    build_report(sweep)
    text = (sweep / "report.md").read_text()
    diverged = text.split("## Diverged jobs")[1].split("##")[0]
    failed = text.split("## Failed jobs")[1].split("##")[0]
    assert "job 0" in diverged and "became nan" in diverged and "job 1" not in diverged
    assert "job 1" in failed and "job 0" not in failed
