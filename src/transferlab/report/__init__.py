"""The sweep report: collect (results.json -> rows), stats (numbers only), analysis (what is compared),
plots, markdown, W&B; `cli` writes the files and holds the entry points."""

from transferlab.report.cli import ReportCallback, SweepReport, build_report, comparison_table, main
from transferlab.report.collect import METRICS, load_rows
from transferlab.report.wandb_report import build_wandb_report, wandb_groups, wandb_report

__all__ = [
    "METRICS",
    "ReportCallback",
    "SweepReport",
    "build_report",
    "build_wandb_report",
    "comparison_table",
    "load_rows",
    "main",
    "wandb_groups",
    "wandb_report",
]
