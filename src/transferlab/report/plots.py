"""The report's figures, drawn with matplotlib's object-oriented API (`Figure`), so importing this module
never selects a backend: notebooks keep their inline plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from transferlab.report import stats
from transferlab.report.analysis import Analysis
from transferlab.report.collect import DEPTH_KEYS, SIZE_KEYS, key_name, label
from transferlab.report.files import open_output
from transferlab.report.source_quality import source_quality_plot
from transferlab.report.wise_plot import wise_plot

MARKERS = "osD^vP*Xh<>p"
TIED, OTHER, BASELINE = "tab:blue", "tab:gray", "tab:orange"


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    with open_output(path, "wb") as f:  # atomic, and never over a file the report did not write
        fig.savefig(f, format="png", dpi=110, metadata={"Software": None})
    return path


def _grid(n: int, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows))
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def make_plots(analysis: Analysis, out: Path) -> list[Path]:
    blocks = [b for b in analysis.blocks if len(b.comparison.table)]
    if not blocks:
        return []
    stem = analysis.options.metric.replace("/", "_")
    files = [
        _arms(analysis, out / f"{stem}_by_group.png"),
        _params(analysis, out / f"{stem}_vs_trainable_params.png"),
    ]
    curves = validation_curves(analysis, out)
    if curves is not None:
        files.append(_curves(curves, out / "val_curves.png"))
    files += _against_size(analysis, out)
    if analysis.tuning is not None and not analysis.design.trials.empty:
        files.append(_tuning_progress(analysis, out / "tuning_progress.png"))
    if analysis.friedman is not None:
        files.append(cd_diagram(analysis.friedman, out / "cd_diagram.png"))
    files += source_quality_plot(analysis, out)
    wise = wise_plot(analysis, out / "wise_curve.png")
    return [*files, wise] if wise is not None else files


def _arms(analysis: Analysis, path: Path) -> Path:
    """Each arm's mean with its 95% interval; arms tied with the best in blue, the baseline in orange."""
    metric = analysis.options.metric
    fig, axes = _grid(
        len(analysis.blocks), height=0.45 * max(len(b.comparison.table) for b in analysis.blocks) + 1.6
    )
    for ax, block in zip(axes, analysis.blocks, strict=True):
        table = block.comparison.table.iloc[::-1]
        for y, (_, row) in enumerate(table.iterrows()):
            color = BASELINE if row["arm"] == row["baseline"] else TIED if row["tied_with_best"] else OTHER
            err = (
                [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
                if pd.notna(row["ci_low"])
                else None
            )
            ax.errorbar(row["mean"], y, xerr=err, fmt="o", color=color, capsize=4)
        ax.set_yticks(
            range(len(table)),
            [f"{a}{' (best)' if a == block.comparison.winner else ''}" for a in table["arm"]],
        )
        ax.set_xlabel(f"{metric} (mean, 95% CI)")
        ax.set_title(block.name if block.name != "all" else f"{metric} by arm", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    handles = [ax.plot([], [], "o", color=c)[0] for c in (TIED, OTHER, BASELINE)]
    axes[0].legend(
        handles, ["tied with the best (Holm)", "significantly worse", "baseline"], fontsize=7, loc="best"
    )
    return _save(fig, path)


def _params(analysis: Analysis, path: Path) -> Path:
    """Accuracy against trainable parameters: one marker per arm, named in the legend (no labels to overlap)."""
    metric = analysis.options.metric
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    arms = sorted({a for b in analysis.blocks for a in b.comparison.table["arm"]})
    for i, arm in enumerate(arms):
        xs, ys, errs = [], [], []
        for block in analysis.blocks:
            table = block.comparison.table.set_index("arm")
            if arm in table.index and arm in block.costs.index:
                xs.append(max(float(block.costs.at[arm, "trainable_params"]), 1.0))
                ys.append(table.at[arm, "mean"])
                errs.append(
                    0.0
                    if pd.isna(table.at[arm, "ci_high"])
                    else table.at[arm, "ci_high"] - table.at[arm, "mean"]
                )
        ax.errorbar(
            xs, ys, yerr=errs, fmt=MARKERS[i % len(MARKERS)], capsize=3, label=arm, color=f"C{i % 10}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    ax.set_title(f"{metric} against trainable parameters")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def validation_curves(analysis: Analysis, sweep_dir: Path) -> pd.DataFrame | None:
    """val/acc per epoch of each compared ok run, from its csv/metrics.csv: columns block, arm, epoch, value."""
    frames = []
    for block in analysis.blocks:
        for _, row in block.runs.iterrows():
            path = sweep_dir / row["job"] / "csv" / "metrics.csv"
            if not path.is_file():
                continue
            metrics = pd.read_csv(path)
            if "val/acc" not in metrics:
                continue
            curve = metrics.dropna(subset=["val/acc"])[["epoch", "val/acc"]].rename(
                columns={"val/acc": "value"}
            )
            frames.append(curve.assign(block=block.name, arm=row["arm"], job=row["job"]))
    return pd.concat(frames, ignore_index=True) if frames else None


def _curves(curves: pd.DataFrame, path: Path) -> Path:
    """Mean validation accuracy per epoch with its 95% band over seeds."""
    names = sorted(curves["block"].unique())
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names, strict=True):
        part = curves[curves["block"] == name]
        for i, (arm, runs) in enumerate(part.groupby("arm", sort=True)):
            summary = stats.intervals(runs, "epoch", "value")
            epochs = summary.index.to_numpy()
            ax.plot(epochs, summary["mean"], label=arm, color=f"C{i % 10}")
            if summary["low"].notna().any():
                ax.fill_between(epochs, summary["low"], summary["high"], alpha=0.15, color=f"C{i % 10}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("val/acc (mean, 95% band)")
        ax.set_title(name if name != "all" else "Validation accuracy", fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _against_size(analysis: Analysis, out: Path) -> list[Path]:
    """The metric against data size or depth, when that is a swept block key or the arm key."""
    design = analysis.design
    files = []
    for key in (*SIZE_KEYS, *DEPTH_KEYS):
        if key not in design.blocks and key != design.arm:
            continue
        runs = pd.concat([b.runs for b in analysis.blocks])
        series = [c for c in ("arm", *design.blocks) if c != key and (c != "arm" or key != design.arm)]
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        groups = runs.groupby(series, sort=True) if series else [("", runs)]
        for i, (name, part) in enumerate(groups):
            points = stats.intervals(part, key, analysis.options.metric)
            xs = points.index.to_numpy(dtype=float)
            ax.errorbar(
                xs,
                points["mean"],
                yerr=(points["high"] - points["mean"]).fillna(0),
                marker="o",
                capsize=3,
                label=" / ".join(map(label, name)) if isinstance(name, tuple) else label(name),
                color=f"C{i % 10}",
            )
        ax.set_xlabel(key_name(key))
        ax.set_ylabel(analysis.options.metric)
        ax.set_title(f"{analysis.options.metric} against {key_name(key)}")
        ax.legend(fontsize=7)
        files.append(
            _save(
                fig,
                out
                / f"{analysis.options.metric.replace('/', '_')}_vs_{key_name(key).rsplit('.', 1)[-1]}.png",
            )
        )
    return files


def _tuning_progress(analysis: Analysis, path: Path) -> Path:
    """Each arm's best trial value so far against the trials it used."""
    trials = analysis.design.trials
    minimize = "config.optimized_mode" in trials and (trials["config.optimized_mode"] == "min").all()
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    keys = [trials["tuning_block"].fillna(""), "tuning_arm"]
    for i, ((block, arm), part) in enumerate(trials.groupby(keys, sort=True)):
        part = part.sort_values("tuning_trial")
        values = part["objective"].where(part["status"] == "ok")
        best = values.cummin() if minimize else values.cummax()
        name = f"{block} / {arm}" if block else str(arm)
        ax.step(
            range(1, len(best) + 1),
            best,
            where="post",
            marker=MARKERS[i % len(MARKERS)],
            label=name,
            color=f"C{i % 10}",
        )
    objective = (
        str(trials["config.optimized_metric"].iloc[0]) if "config.optimized_metric" in trials else "objective"
    )
    ax.set_xlabel("trials used")
    ax.set_ylabel(f"best {objective} so far")
    ax.set_title("Tuning: best validation value against trials")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def cd_diagram(friedman: dict, path: Path) -> Path:
    """Critical-difference diagram (Demšar 2006): average ranks on an axis, arms whose ranks differ by
    less than the Nemenyi critical difference joined by a bar."""
    ranks = friedman["avg_ranks"]
    k, cd = friedman["arms"], friedman["critical_difference"]
    names = list(ranks)
    fig = Figure(figsize=(7, 1.2 + 0.28 * k))
    ax = fig.add_subplot()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k + 2), 2)
    ax.axhline(0, color="black", lw=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.2], color="black", lw=1)
        ax.text(r, 0.45, str(r), ha="center", fontsize=8)
    half = (k + 1) // 2
    for i, name in enumerate(names):
        rank = ranks[name]
        y = -(i % half + 1) - (0 if i < half else 0.5)
        side = i < half
        ax.plot([rank, rank], [0, y], color="black", lw=0.8)
        x_text = 0.6 if side else k + 0.4
        ax.plot([rank, x_text], [y, y], color="black", lw=0.8)
        ax.text(x_text, y, f"{name} ({rank:.2f})", ha="left" if side else "right", va="bottom", fontsize=8)
    cliques = []
    for i, a in enumerate(names):
        group = [b for b in names[i:] if ranks[b] - ranks[a] < cd]
        if len(group) > 1 and not any(set(group) <= set(c) for c in cliques):
            cliques.append(group)
    for j, group in enumerate(cliques):
        y = -0.35 - 0.25 * j
        ax.plot([ranks[group[0]], ranks[group[-1]]], [y, y], color="tab:red", lw=3)
    ax.plot([1, 1 + cd], [1.3, 1.3], color="black", lw=1.5)
    ax.text(1 + cd / 2, 1.45, f"CD = {cd:.2f}", ha="center", fontsize=8)
    ax.set_title(
        f"Average rank over {friedman['blocks']} blocks (Friedman p = {friedman['p_value']:.3g})", fontsize=9
    )
    ax.axis("off")
    return _save(fig, path)
