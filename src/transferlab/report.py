"""Sweep directory -> results.csv, report.md and plots (reads only results.json files and CSV logs).

    python -m transferlab.report SWEEP_DIR [--wandb]        (also: transferlab-report)

Also runs at the end of every `-m` sweep (Hydra callback `ReportCallback`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from scipy import stats  # noqa: E402

from transferlab.results import RESULTS_FILE  # noqa: E402

log = logging.getLogger(__name__)
METRICS = ("test/acc", "test/f1_macro", "test/ece", "test/acc_top5", "test/loss", "val/acc_best")
PRIMARY = "test/acc"
ROW_FIELDS = (
    "status",
    "strategy",
    "backbone",
    "dataset",
    "seed",
    "trainable_params",
    "total_params",
    "train_seconds",
    "peak_memory_mb",
    "weights_sha256",
    "wandb_project",
    "wandb_group",
    "wandb_id",
    "error",
)
# Overrides that choose a config group map to the run's own name for it.
GROUP_COLUMNS = {"strategy": "strategy", "backbone": "backbone", "dataset": "dataset", "seed": "seed"}
SIZE_KEYS = ("config.dataset.samples_per_class",)
DEPTH_KEYS = ("config.strategy.trainable_stages",)


@dataclass
class SweepReport:
    """What a report found and wrote."""

    sweep_dir: Path
    rows: pd.DataFrame
    summary: pd.DataFrame
    group_keys: list[str]
    failed: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------- loading
def find_results(sweep_dir: Path) -> list[Path]:
    """Every job's results.json below `sweep_dir` (hidden folders skipped), in job order."""
    found = [
        p
        for p in sweep_dir.glob(f"**/{RESULTS_FILE}")
        if not any(part.startswith(".") for part in p.relative_to(sweep_dir).parts)
    ]
    return sorted(found, key=lambda p: _natural(p.parent.relative_to(sweep_dir).as_posix()))


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in name.replace("/", " / ").split())


def load_rows(sweep_dir: Path) -> pd.DataFrame:
    """One row per job: run fields, metrics, swept overrides and the flattened resolved config."""
    rows = []
    for path in find_results(sweep_dir):
        record = json.loads(path.read_text())
        row: dict[str, Any] = {"job": path.parent.relative_to(sweep_dir).as_posix() or "."}
        row.update({k: record.get(k) for k in ROW_FIELDS})
        row.update({m: (record.get("metrics") or {}).get(m) for m in METRICS})
        row["overrides"] = json.dumps(record.get("overrides") or [])
        splits = ((record.get("data") or {}).get("split_sha256")) or {}
        row["train_data_sha256"] = splits.get("train")
        row["test_data_sha256"] = splits.get("test")
        config = pd.json_normalize(record.get("config") or {}, sep=".").to_dict("records")
        row.update({f"config.{k}": _scalar(v) for k, v in (config[0] if config else {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def swept_keys(rows: pd.DataFrame) -> list[str]:
    """Columns of the keys that the jobs' overrides (parsed by Hydra) set to different values."""
    parser = OverridesParser.create()
    values: dict[str, set[str]] = {}  # insertion-ordered: keys in the order the user wrote them
    for overrides in rows["overrides"]:
        for override in parser.parse_overrides(json.loads(overrides)):
            key = override.key_or_group
            if override.is_delete() or key.startswith(("hydra.", "paths.")):
                continue
            values.setdefault(key, set()).add(override.get_value_element_as_str())
    columns = [GROUP_COLUMNS.get(k, f"config.{k}") for k, seen in values.items() if len(seen) > 1]
    return [c for c in columns if c in rows]


# ------------------------------------------------------------------------------- statistics
def ci95(series: pd.Series) -> float:
    """Half-width of the 95% t-interval of the mean (NaN for fewer than 2 values)."""
    n = series.count()
    return float(stats.t.ppf(0.975, n - 1) * series.sem()) if n >= 2 else float("nan")


def summarize(rows: pd.DataFrame, group_keys: list[str]) -> pd.DataFrame:
    """Per group: n, mean and 95% CI of each test metric, parameters, time and memory."""
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=[*group_keys, "n"])
    grouped = ok.groupby(group_keys, dropna=False, sort=True)
    out = grouped.size().rename("n").to_frame()
    for metric in METRICS:
        if ok[metric].notna().any():
            out[f"{metric} mean"] = grouped[metric].mean()
            out[f"{metric} ci95"] = grouped[metric].agg(ci95)
    out["trainable_params"] = grouped["trainable_params"].mean().round()
    out["train_seconds"] = grouped["train_seconds"].mean()
    out["peak_memory_mb"] = grouped["peak_memory_mb"].max()
    out = out.reset_index()
    return out.sort_values(f"{PRIMARY} mean", ascending=False, kind="stable").reset_index(drop=True)


# -------------------------------------------------------------------------------- writing
def _fmt(mean: float, ci: float, digits: int = 3) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if pd.isna(ci) else f" ± {ci:.{digits}f}")


def _value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label(row: pd.Series, keys: list[str]) -> str:
    return " / ".join(_value(row[k]) for k in keys)


def _names(keys: list[str]) -> str:
    """Swept keys as the user wrote them (without the `config.` column prefix)."""
    return ", ".join(k.removeprefix("config.") for k in keys)


def render_markdown(report: SweepReport) -> str:
    rows, summary, keys = report.rows, report.summary, report.group_keys
    ok = rows[rows["status"] == "ok"]
    lines = [f"# Sweep report: {report.sweep_dir.name}", ""]
    lines.append(
        f"Jobs: {len(rows)} ({len(ok)} ok, {len(report.failed)} failed). Compared by: {_names(keys)}."
    )
    if "seed" in rows and rows["seed"].nunique() > 1:
        lines.append(
            f"Seeds: {', '.join(str(s) for s in sorted(rows['seed'].dropna().unique()))}; intervals are 95% t-intervals over seeds."
        )
    same = (
        ok["test_data_sha256"].nunique() <= 1
        and ok["train_data_sha256"].groupby(ok["seed"]).nunique().le(1).all()
    )
    lines.append(
        "Data: every job with the same seed trained on the same split, and all were tested on the same test set."
        if same
        else "Data: WARNING: jobs were tested or trained on different data (see results.csv, *_data_sha256)."
    )
    lines += ["", f"## {PRIMARY} by {_names(keys)} (mean ± 95% CI)", ""]
    if summary.empty:
        lines.append("No successful job.")
    else:
        table = pd.DataFrame({_names(keys): [_label(r, keys) for _, r in summary.iterrows()]})
        table["n"] = summary["n"].astype(int)
        for metric in METRICS:
            if f"{metric} mean" in summary:
                table[metric] = [
                    _fmt(m, c)
                    for m, c in zip(summary[f"{metric} mean"], summary[f"{metric} ci95"], strict=True)
                ]
        table["trainable params"] = [f"{int(v):,}" for v in summary["trainable_params"]]
        table["train s"] = [f"{v:.1f}" for v in summary["train_seconds"]]
        table["peak MB"] = [f"{v:.0f}" for v in summary["peak_memory_mb"]]
        best = summary.iloc[0]
        table.iloc[0, 0] = f"**{table.iloc[0, 0]}** (best)"
        lines.append(table.to_markdown(index=False, disable_numparse=True))
        lines += [
            "",
            f"Best by mean {PRIMARY}: **{_label(best, keys)}** "
            f"({_fmt(best[f'{PRIMARY} mean'], best[f'{PRIMARY} ci95'])}).",
        ]
    plots = [p for p in report.files if p.suffix == ".png"]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    if report.failed:
        failed = rows[rows["status"] != "ok"]
        lines += [
            "",
            "## Failed jobs",
            "",
            failed[["job", *[k for k in keys if k in failed], "error"]].to_markdown(index=False),
        ]
    lines += [
        "",
        "Rows: results.csv (one per job, config flattened). Rebuild: `python -m transferlab.report "
        f"{report.sweep_dir}`.",
        "",
    ]
    return "\n".join(lines)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def make_plots(report: SweepReport) -> list[Path]:
    summary, keys, out = report.summary, report.group_keys, report.sweep_dir
    if summary.empty:
        return []
    files = []
    labels = [_label(r, keys) for _, r in summary.iterrows()]
    ci = summary[f"{PRIMARY} ci95"].fillna(0)

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels)), 4))
    ax.bar(labels, summary[f"{PRIMARY} mean"], yerr=ci, capsize=4, color="tab:blue")
    ax.set_ylabel(f"{PRIMARY} (mean ± 95% CI)")
    ax.set_title(f"{PRIMARY} by {_names(keys)}")
    ax.tick_params(axis="x", rotation=30)
    files.append(_save(fig, out / "test_acc_by_group.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(
        summary["trainable_params"].clip(lower=1), summary[f"{PRIMARY} mean"], yerr=ci, fmt="o", capsize=4
    )
    for label, x, y in zip(
        labels, summary["trainable_params"].clip(lower=1), summary[f"{PRIMARY} mean"], strict=True
    ):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(PRIMARY)
    ax.set_title("Accuracy against trainable parameters")
    files.append(_save(fig, out / "test_acc_vs_trainable_params.png"))

    curves = validation_curves(report)
    if curves is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, curve in curves.groupby("group", sort=True):
            ax.plot(curve["epoch"], curve["val/acc"], marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val/acc (mean over seeds)")
        ax.set_title("Validation accuracy")
        ax.legend(fontsize=7)
        files.append(_save(fig, out / "val_curves.png"))

    for x_key, name in [(k, "samples_per_class") for k in SIZE_KEYS] + [
        (k, "trainable_stages") for k in DEPTH_KEYS
    ]:
        if x_key in keys:
            series_keys = [k for k in keys if k != x_key]
            series = summary.groupby(series_keys, sort=True) if series_keys else [(PRIMARY, summary)]
            fig, ax = plt.subplots(figsize=(6, 4))
            for label, part in series:
                part = part.sort_values(x_key)
                ax.errorbar(
                    part[x_key],
                    part[f"{PRIMARY} mean"],
                    yerr=part[f"{PRIMARY} ci95"].fillna(0),
                    marker="o",
                    capsize=3,
                    label=" / ".join(map(_value, label)) if isinstance(label, tuple) else _value(label),
                )
            ax.set_xlabel(name)
            ax.set_ylabel(PRIMARY)
            ax.legend(fontsize=7)
            ax.set_title(f"{PRIMARY} against {name}")
            files.append(_save(fig, out / f"test_acc_vs_{name}.png"))
    return files


def validation_curves(report: SweepReport) -> pd.DataFrame | None:
    """Mean val/acc per epoch and group, from each ok job's csv/metrics.csv."""
    frames = []
    for _, row in report.rows[report.rows["status"] == "ok"].iterrows():
        path = report.sweep_dir / row["job"] / "csv" / "metrics.csv"
        if not path.is_file():
            continue
        metrics = pd.read_csv(path)
        if "val/acc" not in metrics:
            continue
        curve = metrics.dropna(subset=["val/acc"])[["epoch", "val/acc"]].copy()
        curve["group"] = _label(row, report.group_keys)
        frames.append(curve)
    if not frames:
        return None
    return pd.concat(frames).groupby(["group", "epoch"], as_index=False)["val/acc"].mean()


def build_report(sweep_dir: str | Path) -> SweepReport:
    """Write results.csv, report.md and the plots into `sweep_dir`; re-running gives the same files."""
    sweep_dir = Path(sweep_dir).resolve()
    rows = load_rows(sweep_dir)
    if rows.empty:
        raise FileNotFoundError(f"No {RESULTS_FILE} below {sweep_dir}: is it a transferlab sweep directory?")
    keys = [k for k in swept_keys(rows) if k != "seed"] or ["strategy"]
    report = SweepReport(sweep_dir, rows, summarize(rows, keys), keys)
    report.failed = rows.loc[rows["status"] != "ok", "job"].tolist()
    rows.to_csv(sweep_dir / "results.csv", index=False)
    report.files = [sweep_dir / "results.csv", *make_plots(report)]
    (sweep_dir / "report.md").write_text(render_markdown(report))
    report.files.append(sweep_dir / "report.md")
    return report


# ------------------------------------------------------------------------------------- W&B
def wandb_groups(report: SweepReport) -> list[tuple[str, str]]:
    """(project, group) of the sweep's W&B runs, as recorded in their results.json."""
    rows = (
        report.rows.dropna(subset=["wandb_group"]) if "wandb_group" in report.rows else report.rows.iloc[:0]
    )
    return sorted({(str(p), str(g)) for p, g in zip(rows["wandb_project"], rows["wandb_group"], strict=True)})


def build_wandb_report(report: SweepReport, entity: str, project: str, groups: list[str]):
    """A W&B Report (wandb-workspaces) of the sweep: the markdown table, then per group a bar chart of
    test accuracy by strategy and the validation curves."""
    import wandb_workspaces.reports.v2 as wr

    blocks = [
        wr.H1(text=f"transferlab sweep {report.sweep_dir.name}"),
        wr.MarkdownBlock(text=render_markdown(report)),
    ]
    for group in groups:
        runset = wr.Runset(
            entity=entity,
            project=project,
            name=group,
            filters=f"Metric('group') == '{group}'",
            groupby=["strategy.name"],
        )
        panels = [
            wr.BarPlot(title=PRIMARY, metrics=[PRIMARY], groupby="strategy.name"),
            wr.LinePlot(title="val/acc", x="epoch", y=["val/acc"], groupby="strategy.name"),
        ]
        blocks.append(wr.PanelGrid(runsets=[runset], panels=panels))
    return wr.Report(entity=entity, project=project, title=f"transferlab: {', '.join(groups)}", blocks=blocks)


def wandb_report(report: SweepReport, entity: str | None = None) -> str:
    """Build and save the W&B Report when online; otherwise say how to sync and build it later."""
    import os

    found = wandb_groups(report)
    if not found:
        return "No W&B runs in this sweep (run it with logger=wandb or logger=many)."
    sync = f"wandb sync {report.sweep_dir}/*/wandb/offline-run-*"
    if os.environ.get("WANDB_MODE", "offline") != "online":
        return (
            f"W&B runs are offline. Upload them with `{sync}`, then build the report with "
            f"`WANDB_MODE=online transferlab-report {report.sweep_dir} --wandb` (needs `pip install wandb-workspaces`)."
        )
    try:
        import wandb
        import wandb_workspaces  # noqa: F401
    except ImportError:
        return "Building W&B Reports needs wandb-workspaces: pip install 'transferlab[wandb-reports]'."
    entity = entity or wandb.Api().default_entity
    project = found[0][0]
    saved = build_wandb_report(report, entity, project, [g for p, g in found if p == project]).save()
    return f"W&B Report: {saved.url}"


# ------------------------------------------------------------------------------ entry points
class ReportCallback(Callback):
    """Hydra callback: build the report at the end of a multirun; exit non-zero naming failed jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = build_report(sweep_dir)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        print(f"Report: {sweep_dir / 'report.md'}")
        if report.failed:
            print(
                f"error: {len(report.failed)} job(s) failed: {', '.join(report.failed)} (see {sweep_dir / 'report.md'})",
                file=sys.stderr,
            )
            sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console script `transferlab-report`."""
    parser = argparse.ArgumentParser(
        prog="transferlab-report", description="Build a sweep's comparison report."
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--wandb", action="store_true", help="also build a W&B Report of the sweep's runs (online)"
    )
    parser.add_argument("--entity", default=None, help="W&B entity for --wandb (default: yours)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.sweep_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print((args.sweep_dir / "report.md").read_text())
    print("Wrote: " + ", ".join(p.name for p in report.files))
    if args.wandb:
        print(wandb_report(report, entity=args.entity))


if __name__ == "__main__":
    main()
