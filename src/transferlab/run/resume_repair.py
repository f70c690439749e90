"""`ResumeRepair`: what a resumed run needs so that it ends exactly as an uninterrupted one would.

- the random streams (Python, NumPy, torch, CUDA) where the checkpoint left them: Lightning does not
  save them, and without them a resumed run shuffles and drops out differently;
- the CSV log cut back to the checkpoint's step: the resumed run logs the steps after it again;
- the learning-rate schedule resized when `trainer.max_epochs` changed since the checkpoint (it was
  sized for the old number of steps): it follows the schedule the new length gives.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from transferlab.run.checkpoint import rng_state, set_rng_state
from transferlab.run.csv_log import CrashSafeCSVLogger

log = logging.getLogger(__name__)


class ResumeRepair(pl.Callback):
    """Saves the random streams in each checkpoint (`checkpoint["transferlab"]["rng"]`) and, when a fit
    resumes from one, restores them, truncates the CSV log and resizes the schedule at the start."""

    def __init__(self) -> None:
        self._pending_rng: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint.setdefault("transferlab", {})["rng"] = rng_state()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # loading weights to test: nothing to resume
            return
        self._pending_rng = (checkpoint.get("transferlab") or {}).get("rng")
        for logger in trainer.loggers:
            if isinstance(logger, CrashSafeCSVLogger):
                logger.truncate(int(checkpoint.get("global_step", 0)))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:  # a fresh start
            return
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        fit_schedule_to_plan(trainer, pl_module.planned_steps())


def fit_schedule_to_plan(trainer: pl.Trainer, planned: int) -> None:
    """Resize step schedules (`warmup_cosine`'s) sized for another number of steps to `planned`."""
    configs = trainer.lr_scheduler_configs
    scheduler = configs[0].scheduler if configs else None
    schedules = getattr(scheduler, "lr_lambdas", [])
    if not schedules or all(getattr(f, "total_steps", planned) == planned for f in schedules):
        return
    step = scheduler.last_epoch
    before, old_total = schedules[0](step), schedules[0].total_steps
    for f in schedules:
        f.resize(planned)
    for group, base, f in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, schedules, strict=True):
        group["lr"] = base * f(step)
    log.warning(
        "trainer.max_epochs changed since the checkpoint: the learning-rate schedule now spans %d steps "
        "(was %d); at step %d its factor goes from %.3g to %.3g and follows the longer schedule from here.",
        planned,
        old_total,
        step,
        before,
        schedules[0](step),
    )
