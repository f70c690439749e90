"""The one-screen summary printed at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from transferlab.core.names import RESULTS_FILE


def print_summary(record: dict[str, Any], out: Path) -> None:
    """Strategy, backbone, parameters, test metrics and time of one run."""
    console = Console(stderr=False, soft_wrap=True)
    table = Table(title=f"transferlab run: {record['status']}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    table.add_row("strategy", str(record["strategy"]))
    table.add_row(
        "backbone", f"{record['backbone']} (weights: {(record.get('weights') or {}).get('source', '?')})"
    )
    table.add_row("dataset", f"{record['dataset']} ({len(record.get('class_names') or [])} classes)")
    if record.get("trainable_params") is not None:
        table.add_row(
            "parameters", f"{record['trainable_params']:,} trainable / {record['total_params']:,} total"
        )
    for key, value in record.get("metrics", {}).items():
        table.add_row(key, f"{value:.4f}")
    if record.get("train_seconds") is not None:
        table.add_row("train time", f"{record['train_seconds']:.1f} s")
    if record.get("error"):
        table.add_row("error", str(record["error"]))
    table.add_row("results", str(out / RESULTS_FILE))
    console.print(table)
