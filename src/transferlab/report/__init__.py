"""The sweep report: collect (results.json -> rows), stats (numbers only), analysis (what is compared),
plots, markdown, W&B; `build` writes the files, `cli` holds the entry points. Names load on first use, so
importing a submodule (or `transferlab.report.ReportCallback` for Hydra) does not load them all."""

from transferlab.core.lazy import lazy_names

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
__getattr__, __dir__ = lazy_names(__name__, _WHERE)
