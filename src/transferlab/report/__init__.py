"""The sweep report: collect (results.json -> rows), stats (numbers only), analysis (what is compared),
plots, markdown, W&B; `build` writes the files, `cli` holds the entry points. Names load on first use, so
importing a submodule (or `transferlab.report.ReportCallback` for Hydra) does not load them all."""

from importlib import import_module
from typing import Any

_WHERE = {
    "ReportCallback": "callback",
    "SweepReport": "build",
    "build_report": "build",
    "comparison_table": "build",
    "main": "cli",
    "METRICS": "collect",
    "load_rows": "collect",
    "build_wandb_report": "wandb_views",
    "wandb_groups": "wandb_views",
    "wandb_report": "wandb_views",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"transferlab.report.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'transferlab.report' has no attribute {name!r}")
