"""The WiSE-FT curve of each arm whose runs interpolated (`wise.enabled`): in-distribution test accuracy
against the mean accuracy over the eval sets, one point per alpha (mean over the arm's runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from transferlab.report.analysis import Analysis
from transferlab.report.files import open_output

X, Y = "test/acc", "test/ood_mean/acc"


def wise_points(analysis: Analysis) -> pd.DataFrame:
    """arm, alpha, ID accuracy and OOD mean accuracy: the mean over the arm's runs at each alpha."""
    rows = []
    for block in analysis.blocks:
        runs = (
            block.runs[block.runs["wise_curve"].notna()]
            if "wise_curve" in block.runs
            else block.runs.iloc[:0]
        )
        for _, run in runs.iterrows():
            for point in json.loads(run["wise_curve"]):
                if X in point and Y in point:
                    rows.append(
                        {
                            "block": block.name,
                            "arm": run["arm"],
                            "alpha": point["alpha"],
                            X: point[X],
                            Y: point[Y],
                        }
                    )
    if not rows:
        return pd.DataFrame(columns=["block", "arm", "alpha", X, Y])
    return pd.DataFrame(rows).groupby(["block", "arm", "alpha"], as_index=False)[[X, Y]].mean()


def wise_plot(analysis: Analysis, path: Path) -> Path | None:
    """wise_curve.png, or None when no run has a WiSE-FT curve with eval sets."""
    points = wise_points(analysis)
    if points.empty:
        return None
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for (block, arm), part in points.groupby(["block", "arm"], sort=True):
        name = arm if block == "all" else f"{arm} ({block})"
        ax.plot(part[X], part[Y], marker="o", label=name)
        for _, p in part.iterrows():
            ax.annotate(
                f"{p['alpha']:g}", (p[X], p[Y]), textcoords="offset points", xytext=(4, 4), fontsize=7
            )
    ax.set_xlabel("in-distribution test accuracy")
    ax.set_ylabel("mean accuracy over the eval sets")
    ax.set_title("WiSE-FT: alpha from the starting (0) to the fine-tuned (1) weights")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with open_output(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, metadata={"Software": None})
    return path
