"""The report's commands: `python -m transferlab.report SWEEP_DIR [--baseline ARM] [--metric test/acc]
[--wandb]` (console script `transferlab-report`) and the end of every `-m` sweep (Hydra callback
`ReportCallback`). They load the report's libraries (pandas, statistics, plots: `transferlab.report.build`)
only once there is a report to build, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.core.errors import TransferlabError
from transferlab.core.names import DEFAULT_PAIRED_TEST, PAIRED_TESTS, REPORT_FILE

if TYPE_CHECKING:
    from transferlab.report.build import SweepReport


class ReportCallback(Callback):
    """Hydra callback: build the report at the end of a multirun; exit non-zero naming failed jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from transferlab.report.build import build_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = build_report(
                sweep_dir, **OmegaConf.to_container(config.get("report") or {}, resolve=True)
            )
        except TransferlabError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        _say_what_was_skipped(report)
        print(f"Report: {sweep_dir / REPORT_FILE}")
        if report.failed:
            print(
                f"error: {len(report.failed)} job(s) failed: {', '.join(report.failed)} (see {sweep_dir / REPORT_FILE})",
                file=sys.stderr,
            )
            sys.exit(1)


def _say_what_was_skipped(report: SweepReport) -> None:
    for job, why in report.rejected:
        print(f"warning: {job} left out: {why}.", file=sys.stderr)
    for path in report.moved_aside:
        print(f"warning: {path.name} was not written by this report; moved to {path}.", file=sys.stderr)


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
    parser.add_argument(
        "--test", choices=list(PAIRED_TESTS), help=f"paired test (default: {DEFAULT_PAIRED_TEST})"
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also build a W&B Report of the sweep's runs (online)"
    )
    parser.add_argument("--entity", default=None, help="W&B entity for --wandb (default: yours)")
    args = parser.parse_args(argv)
    from transferlab.report.build import build_report

    try:
        report = build_report(
            args.sweep_dir,
            metric=args.metric,
            baseline=args.baseline,
            alpha=args.alpha,
            test=args.test,
            lock=True,
        )
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a read-only or full folder
        print(
            f"error: cannot write the report into {args.sweep_dir}: {exc.strerror} ({exc.filename}).",
            file=sys.stderr,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        print(
            "error: interrupted; every report file is written whole or not at all, so the folder holds the "
            "previous report or parts of the new one: run the command again.",
            file=sys.stderr,
        )
        sys.exit(130)
    _say_what_was_skipped(report)
    print((report.sweep_dir / REPORT_FILE).read_text())
    print("Wrote: " + ", ".join(p.name for p in report.files))
    if args.wandb:
        from transferlab.report.wandb_views import wandb_report

        print(wandb_report(report, entity=args.entity))
