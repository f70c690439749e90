"""Resuming runs and sweeps: which checkpoint, which jobs to skip, continuous CSV logs."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from transferlab.atomic import atomic_open
from transferlab.errors import TransferlabError
from transferlab.results import RESULTS_FILE, read_results

log = logging.getLogger(__name__)


def finished_record(cfg: DictConfig, out: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """With resume=true, a job whose results.json says ok is not run again (sweep resume), unless only
    trainer settings changed (e.g. more epochs): then it continues from its last checkpoint."""
    path = out / RESULTS_FILE
    if not cfg.get("resume") or not path.is_file():
        return None
    previous = read_results(path)
    before, now = job_overrides(previous.get("overrides", [])), job_overrides(record["overrides"])
    if [o for o in before if not o.startswith("trainer.")] != [
        o for o in now if not o.startswith("trainer.")
    ]:
        raise TransferlabError(
            f"resume=true, but {out} holds a different job (overrides {previous.get('overrides')} vs "
            f"{record['overrides']}); resume with the same overrides or choose another directory."
        )
    if previous.get("status") != "ok":
        log.info("Resuming %s job in %s.", previous.get("status"), out)
        return None
    if before != now:
        log.info("Continuing finished run %s with new trainer settings.", out)
        return None
    log.info("Skipping %s: already finished (status ok). Remove results.json to run it again.", out)
    return previous


def job_overrides(overrides: list[str]) -> list[str]:
    skip = ("resume=", "hydra.", "trainer.enable_progress_bar")
    return sorted(o.lstrip("+~") for o in overrides if not o.lstrip("+~").startswith(skip))


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    if not cfg.get("resume"):
        return None
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("Resuming from %s", last)
        return str(last)
    log.warning("resume=true but %s does not exist: starting from the beginning.", last)
    return None


def set_csv_aside(out: Path) -> Path | None:
    """Lightning's CSVLogger deletes an existing metrics.csv: keep it to merge after the resumed run."""
    metrics = out / "csv" / "metrics.csv"
    if not metrics.is_file():
        return None
    aside = metrics.with_name("metrics.before_resume.csv")
    os.replace(metrics, aside)
    return aside


def merge_csv(out: Path, aside: Path) -> None:
    """The earlier rows up to the epoch the resumed run starts at, then its rows: one continuous log.

    Rows of an epoch that was cut short (after the last checkpoint) are dropped.
    """
    metrics = out / "csv" / "metrics.csv"
    old = pd.read_csv(aside)
    if metrics.is_file():
        new = pd.read_csv(metrics)
        old = pd.concat([old[old["epoch"] < new["epoch"].min()], new], ignore_index=True)
    with atomic_open(metrics, "w") as f:
        old.to_csv(f, index=False)
    aside.unlink()
