"""Sweep directory -> results.csv, comparison.csv, report.md and plots (reads only results.json files and
CSV logs, so it works with any launcher). `transferlab.report.cli` holds the commands that call it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.core.errors import TransferlabError
from transferlab.core.locks import DirectoryLock
from transferlab.core.names import COMPARISON_FILE, REPORT_FILE, RESULTS_FILE, ROWS_FILE
from transferlab.report.analysis import Analysis, Options, analyse
from transferlab.report.collect import design, load_rows
from transferlab.report.files import ReportFiles, open_output
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
    rejected: list[tuple[str, str]] = field(default_factory=list)  # results.json files that are not ours
    moved_aside: list[Path] = field(default_factory=list)  # files there that the report did not write


def build_report(sweep_dir: str | Path, lock: bool = False, **options: Any) -> SweepReport:
    """Write results.csv, comparison.csv, report.md and the plots into `sweep_dir`; re-running gives the
    same files. `options` (metric, baseline, alpha, test) override the sweep's `report.*` config. With
    `lock`, the sweep directory's lock is taken for the writing (a live sweep holds it: refused)."""
    sweep_dir = Path(sweep_dir).resolve()
    if not sweep_dir.is_dir():
        raise TransferlabError(
            f"{sweep_dir}: no such directory; give a sweep directory (outputs/<exp>/multiruns/<time>)."
        )
    rows = load_rows(sweep_dir)
    rejected = rows.attrs.get("rejected", [])
    if rows.empty:
        found = f"; its {RESULTS_FILE} files are not transferlab records: " if rejected else ""
        found += ", ".join(f"{job} ({why})" for job, why in rejected[:5])
        raise TransferlabError(
            f"{sweep_dir} holds no transferlab run record{found or f' (no {RESULTS_FILE} below it)'}; "
            "give a transferlab sweep directory. Nothing was written."
        )
    settings = Options.from_config(_report_config(rows), **options)
    analysis = analyse(design(rows), settings)
    trial = rows.get("tuning_phase", pd.Series(index=rows.index, dtype=object)) == "trial"
    failed = rows.loc[~rows["status"].isin(["ok", "pruned"]) & ~trial, "job"].tolist()
    report = SweepReport(sweep_dir, rows, analysis, failed, rejected=rejected)
    files = ReportFiles(sweep_dir)
    owner = DirectoryLock(sweep_dir, "sweep", "wait for it to finish: its report is built when it ends")
    with owner if lock else contextlib.nullcontext(), files.active():
        _write_csv(rows, sweep_dir / ROWS_FILE)
        _write_csv(comparison_table(analysis), sweep_dir / COMPARISON_FILE)
        plots = make_plots(analysis, sweep_dir)
        with open_output(sweep_dir / REPORT_FILE, "w") as f:
            f.write(render_markdown(analysis, rows, sweep_dir, plots))
    report.files = [sweep_dir / ROWS_FILE, sweep_dir / COMPARISON_FILE, *plots, sweep_dir / REPORT_FILE]
    report.moved_aside = files.moved
    return report


def _report_config(rows: pd.DataFrame) -> dict[str, Any]:
    columns = [c for c in rows if c.startswith("config.report.")]
    first = rows[columns].iloc[0] if columns else {}
    return {"report": {c.removeprefix("config.report."): first[c] for c in columns if pd.notna(first[c])}}


def comparison_table(analysis: Analysis) -> pd.DataFrame:
    """comparison.csv: one row per (block, arm, metric: the report's and its value on each eval set) with the
    columns of `stats.COMPARISON_COLUMNS`."""
    frames = []
    for block in analysis.blocks:
        for metric, comparison in {analysis.options.metric: block.comparison, **block.sets}.items():
            table = comparison.table.reindex(columns=COMPARISON_COLUMNS)
            frames.append(table.assign(block=block.name, metric=metric))
    if not frames:
        return pd.DataFrame(columns=[*COMPARISON_COLUMNS, "block", "metric"])
    return pd.concat(frames, ignore_index=True)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with open_output(path, "w") as f:
        frame.to_csv(f, index=False)
