"""Sweep directory -> results.csv, comparison.csv, report.md and plots (reads only results.json files and
CSV logs, so it works with any launcher).

    python -m transferlab.report SWEEP_DIR [--baseline ARM] [--metric test/acc] [--wandb]

Also runs at the end of every `-m` sweep (Hydra callback `ReportCallback`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.core.atomic import atomic_open
from transferlab.report.analysis import Analysis, Options, analyse
from transferlab.report.collect import RESULTS_FILE, design, load_rows
from transferlab.report.markdown import render_markdown
from transferlab.report.plots import make_plots
from transferlab.report.stats import COMPARISON_COLUMNS


@dataclass
class SweepReport:
    """What a report found and wrote."""

    sweep_dir: Path
    rows: pd.DataFrame
    analysis: Analysis
    failed: list[str] = field(default_factory=list)  # failed jobs other than tuning trials
    files: list[Path] = field(default_factory=list)


def build_report(sweep_dir: str | Path, **options: Any) -> SweepReport:
    """Write results.csv, comparison.csv, report.md and the plots into `sweep_dir`; re-running gives the
    same files. `options` (metric, baseline, alpha, test) override the sweep's `report.*` config."""
    sweep_dir = Path(sweep_dir).resolve()
    rows = load_rows(sweep_dir)
    if rows.empty:
        raise FileNotFoundError(f"No {RESULTS_FILE} below {sweep_dir}: is it a transferlab sweep directory?")
    settings = Options.from_config(_report_config(rows), **options)
    analysis = analyse(design(rows), settings)
    trial = rows.get("tuning_phase", pd.Series(index=rows.index, dtype=object)) == "trial"
    failed = rows.loc[~rows["status"].isin(["ok", "pruned"]) & ~trial, "job"].tolist()
    report = SweepReport(sweep_dir, rows, analysis, failed)
    _write_csv(rows, sweep_dir / "results.csv")
    _write_csv(comparison_table(analysis), sweep_dir / "comparison.csv")
    plots = make_plots(analysis, sweep_dir)
    with atomic_open(sweep_dir / "report.md", "w") as f:
        f.write(render_markdown(analysis, rows, sweep_dir, plots))
    report.files = [sweep_dir / "results.csv", sweep_dir / "comparison.csv", *plots, sweep_dir / "report.md"]
    return report


def _report_config(rows: pd.DataFrame) -> dict[str, Any]:
    columns = [c for c in rows if c.startswith("config.report.")]
    first = rows[columns].iloc[0] if columns else {}
    return {"report": {c.removeprefix("config.report."): first[c] for c in columns if pd.notna(first[c])}}


def comparison_table(analysis: Analysis) -> pd.DataFrame:
    """comparison.csv: one row per (block, arm) with the columns of `stats.COMPARISON_COLUMNS`."""
    frames = []
    for block in analysis.blocks:
        table = block.comparison.table.reindex(columns=COMPARISON_COLUMNS)
        frames.append(table.assign(block=block.name, metric=analysis.options.metric))
    if not frames:
        return pd.DataFrame(columns=[*COMPARISON_COLUMNS, "block", "metric"])
    return pd.concat(frames, ignore_index=True)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_open(path, "w") as f:
        frame.to_csv(f, index=False)


class ReportCallback(Callback):
    """Hydra callback: build the report at the end of a multirun; exit non-zero naming failed jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = build_report(
                sweep_dir, **OmegaConf.to_container(config.get("report") or {}, resolve=True)
            )
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
    parser.add_argument("--metric", help="metric compared (default: the sweep's report.metric, test/acc)")
    parser.add_argument(
        "--baseline", help="arm every other arm is compared with (default: scratch when present)"
    )
    parser.add_argument("--alpha", type=float, help="family-wise error rate (default 0.05)")
    parser.add_argument("--test", choices=["t", "wilcoxon"], help="paired test (default: t)")
    parser.add_argument(
        "--wandb", action="store_true", help="also build a W&B Report of the sweep's runs (online)"
    )
    parser.add_argument("--entity", default=None, help="W&B entity for --wandb (default: yours)")
    args = parser.parse_args(argv)
    try:
        report = build_report(
            args.sweep_dir, metric=args.metric, baseline=args.baseline, alpha=args.alpha, test=args.test
        )
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print((report.sweep_dir / "report.md").read_text())
    print("Wrote: " + ", ".join(p.name for p in report.files))
    if args.wandb:
        from transferlab.report.wandb_views import wandb_report

        print(wandb_report(report, entity=args.entity))
