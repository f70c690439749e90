"""The report on sources and budgets, from synthetic sweeps with known answers (results.json files):
source accuracy against target accuracy per strategy (r and its bootstrap interval), and the line
saying that dataset.val_source=pool was used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from transferlab.report import build_report
from transferlab.report.source_quality import PLOT

SOURCES = {"near": 0.98, "inverted": 0.93, "fractals": 0.64, "random": None}


def _write(root: Path, target: dict[tuple[str, str], list[float]], val_source=lambda job: "budget") -> Path:
    """Final runs of a tuned sweep: one job per (source, strategy, seed) with the given test accuracy."""
    job = 0
    for (source, strategy), values in target.items():
        for seed, acc in enumerate(values, start=100):
            folder = root / str(job)
            folder.mkdir(parents=True)
            acc_source = SOURCES[source]
            weights = (
                {"source": "random"}
                if acc_source is None
                else {
                    "source": "file",
                    "sha256": f"sha-{source}",
                    "from_run": {"metrics": {"test/acc": acc_source}},
                }
            )
            arm = f"{source}-{strategy}"
            record = {
                "status": "ok", "error": None, "strategy": strategy, "backbone": "simple_cnn",
                "dataset": "digits_target", "experiment": "source_selection", "seed": seed,
                "metrics": {"test/acc": acc}, "overrides": [f"seed={seed}"],
                "config": {"report": {"metric": "test/acc", "baseline": None, "alpha": 0.05, "test": "t"}},
                "data": {"split_sha256": {"train": f"t{seed}", "val": f"v{seed}", "test": "test"},
                         "labels_used": 50, "val_source": val_source(job)},
                "weights": weights, "weights_sha256": weights.get("sha256"),
                "tuning": {"phase": "final", "arm": arm, "block": "", "study": f"s/{arm}", "trial": 0},
                "trainable_params": 10, "train_seconds": 1.0, "wall_seconds": 1.0, "peak_memory_mb": 1.0,
            }  # fmt: skip
            (folder / "results.json").write_text(json.dumps(record))
            job += 1
    return root


def test_source_accuracy_against_target_accuracy_per_strategy(tmp_path):
    rng = np.random.default_rng(0)
    means = {"near": 0.90, "inverted": 0.86, "fractals": 0.80, "random": 0.70}
    target = {
        (s, strategy): list(np.clip(m + shift + rng.normal(0, 0.01, 4), 0, 1))
        for strategy, shift in (("full", 0.0), ("linear_probe", -0.1))
        for s, m in means.items()
    }
    sweep = _write(tmp_path / "sweep", target)
    report = build_report(sweep)
    assert sweep / PLOT in report.files and (sweep / PLOT).read_bytes()[:4] == b"\x89PNG"
    text = (sweep / "report.md").read_text()
    assert "## Source accuracy against target accuracy" in text
    for strategy in ("full", "linear_probe"):
        with_acc = [s for s in SOURCES if SOURCES[s] is not None]  # random init has no source accuracy
        r = stats.pearsonr([SOURCES[s] for s in with_acc], [np.mean(target[s, strategy]) for s in with_acc])
        line = next(line for line in text.splitlines() if line.startswith(f"- {strategy}: Pearson r"))
        assert f"r = {r.statistic:+.2f}" in line and "over 3 sources" in line
        low, high = (float(v) for v in line.split("interval [")[1].split("]")[0].split(", "))
        assert -1.0 <= low <= r.statistic + 1e-9 and high <= 1.0 and low < high
    assert "Labels: each run saw 50 labelled images" in text and "val_source=pool" not in text


def test_the_report_says_when_validation_came_from_the_pool(tmp_path):
    target = {("near", "full"): [0.9, 0.91, 0.92], ("random", "full"): [0.8, 0.81, 0.79]}
    sweep = _write(tmp_path / "sweep", target, val_source=lambda job: "pool" if job < 3 else "budget")
    text = (sweep / "report.md").read_text() if build_report(sweep) else ""
    line = next(line for line in text.splitlines() if line.startswith("Validation:"))
    assert "3 of 6 runs used dataset.val_source=pool" in line and "outside the labelled budget" in line
    assert PLOT not in text  # one source with an accuracy: nothing to correlate
    with pytest.raises(StopIteration):
        next(line for line in text.splitlines() if line.startswith("- full: Pearson r"))
