"""The Hydra callback that builds the report when a multirun ends (`hydra/default.yaml`).

Hydra builds its callbacks before every job, single runs included, so this module stays light: the
report's libraries (pandas, statistics, plots) load only in `on_multirun_end`.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class ReportCallback(Callback):
    """Build the report at the end of a multirun; exit non-zero naming failed jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from transferlab.report import cli

        cli.ReportCallback().on_multirun_end(config, **kwargs)
