"""The sweep as a W&B Report (wandb-workspaces, online only): its report.md, then per group a bar chart
of the metric by strategy and the validation curves."""

from __future__ import annotations

import os
from typing import Any

SweepReport = Any  # transferlab.report.build.SweepReport (not imported: pandas and the statistics)


def wandb_groups(report: SweepReport) -> list[tuple[str, str]]:
    """(project, group) of the sweep's W&B runs, as recorded in their results.json."""
    rows = (
        report.rows.dropna(subset=["wandb_group"]) if "wandb_group" in report.rows else report.rows.iloc[:0]
    )
    return sorted({(str(p), str(g)) for p, g in zip(rows["wandb_project"], rows["wandb_group"], strict=True)})


def build_wandb_report(report: SweepReport, entity: str, project: str, groups: list[str]):
    """A W&B Report object of the sweep (saved by `wandb_report`; built offline in tests)."""
    import wandb_workspaces.reports.v2 as wr

    metric = report.analysis.options.metric
    blocks = [
        wr.H1(text=f"transferlab sweep {report.sweep_dir.name}"),
        wr.MarkdownBlock(text=(report.sweep_dir / "report.md").read_text()),
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
            wr.BarPlot(title=metric, metrics=[metric], groupby="strategy.name"),
            wr.LinePlot(title="val/acc", x="epoch", y=["val/acc"], groupby="strategy.name"),
        ]
        blocks.append(wr.PanelGrid(runsets=[runset], panels=panels))
    return wr.Report(entity=entity, project=project, title=f"transferlab: {', '.join(groups)}", blocks=blocks)


def wandb_report(report: SweepReport, entity: str | None = None) -> str:
    """Build and save the W&B Report when online; otherwise say how to sync and build it later."""
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
