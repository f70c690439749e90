"""Source quality against transfer (Kornblith et al. 2019's question, on the sweep's own data): per
strategy, each source's own test accuracy (from its export, `source_acc`) against the target accuracy
of the runs that started from it, with Pearson r and its bootstrap 95% interval over seeds.

Drawn when at least two sources of one strategy carry a source accuracy (the source zoo's members do;
random init and hub weights without a recorded accuracy are left out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transferlab.report.analysis import Analysis
from transferlab.report.files import open_output
from transferlab.sources.agreement import correlation

PLOT = "source_vs_target_acc.png"
N_BOOT = 2000


def source_table(analysis: Analysis) -> pd.DataFrame:
    """One row per (strategy, source): source accuracy, the target metric's mean, min, max and seeds."""
    design, metric = analysis.design, analysis.options.metric
    ok = design.compared[design.compared["status"] == "ok"]
    if "source_acc" not in ok or metric not in ok:
        return pd.DataFrame()
    ok = ok[ok["source_acc"].notna() & ok[metric].notna()]
    if ok.empty:
        return pd.DataFrame()
    by = ["strategy", "weights_sha256"]
    table = ok.groupby(by, sort=False).agg(
        source=(design.arm, "first"),
        source_acc=("source_acc", "first"),
        mean=(metric, "mean"),
        low=(metric, "min"),
        high=(metric, "max"),
        seeds=(metric, "size"),
        values=(metric, list),
    )
    return table.reset_index()


def correlations(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per strategy with at least two sources: {r, r_low, r_high, sources}."""
    found: dict[str, dict[str, float]] = {}
    if table.empty:
        return found
    for strategy, group in table.groupby("strategy", sort=False):
        if len(group) < 2:
            continue
        accs = [np.asarray(v, dtype=float) for v in group["values"]]
        found[str(strategy)] = {**correlation(list(group["source_acc"]), accs, N_BOOT), "sources": len(group)}
    return found


def source_quality_plot(analysis: Analysis, out: Path) -> list[Path]:
    """`source_vs_target_acc.png`, one panel per strategy; [] when no strategy has two sources."""
    table = source_table(analysis)
    found = correlations(table)
    if not found:
        return []
    fig = Figure(figsize=(4.6 * len(found), 3.8))
    for i, (strategy, r) in enumerate(found.items()):
        ax = fig.add_subplot(1, len(found), i + 1)
        group = table[table["strategy"] == strategy]
        ax.errorbar(
            group["source_acc"],
            group["mean"],
            yerr=[group["mean"] - group["low"], group["high"] - group["mean"]],
            fmt="o",
            capsize=3,
        )
        for _, row in group.iterrows():
            ax.annotate(
                str(row["source"]),
                (row["source_acc"], row["mean"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_title(f"{strategy}: r = {r['r']:+.2f} [{r['r_low']:+.2f}, {r['r_high']:+.2f}]", fontsize=9)
        ax.set_xlabel("source task test accuracy")
        ax.set_ylabel(f"target {analysis.options.metric} (mean, min-max over seeds)")
    fig.tight_layout()
    path = out / PLOT
    with open_output(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, metadata={"Software": None})
    return [path]


def source_quality_lines(analysis: Analysis) -> list[str]:
    """The report's lines: r per strategy with its interval."""
    found = correlations(source_table(analysis))
    if not found:
        return []
    lines = ["", "## Source accuracy against target accuracy", ""]
    for strategy, r in found.items():
        lines.append(
            f"- {strategy}: Pearson r = {r['r']:+.2f}, 95% bootstrap interval [{r['r_low']:+.2f}, {r['r_high']:+.2f}] "
            f"over {r['sources']} sources (each source's seeds resampled; sources without a recorded accuracy, "
            "e.g. random init, left out)."
        )
    return lines
