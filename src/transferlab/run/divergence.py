"""`DivergenceGuard`: stop a run whose training loss blew up, as `DivergedError` (status `diverged`).

Lightning's `EarlyStopping(check_finite=True, divergence_threshold=...)` decides, after every training
step instead of at the epoch's end: the loss not finite, or the task loss above `factor` times its first
value (measured from at least `floor`: a near-perfect start may wobble without diverging). A
regularizer's penalty may be large by design, so the threshold applies to the task loss alone (the
module's `task_loss` output) and finiteness to the total. The first value travels in checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping

from transferlab.core.errors import DivergedError

DIVERGED_FACTOR = 100.0  # a training loss this many times its first value has diverged...
LOSS_FLOOR = 0.1  # ...measured from at least this


class DivergenceGuard(EarlyStopping):
    """Raises `DivergedError` (step, learning rate, loss) at the first diverged step, in every process."""

    def __init__(self, factor: float = DIVERGED_FACTOR, floor: float = LOSS_FLOOR):
        super().__init__(monitor="train/task_loss", mode="min", check_finite=True, patience=2**62)
        self.factor, self.floor = float(factor), float(floor)
        self.first_loss = math.nan
        self._step = 0

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._step = int(trainer.global_step)  # the step this batch trains (before its optimizer step)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any
    ) -> None:
        if not isinstance(outputs, dict) or "task_loss" not in outputs:
            return
        task, total = float(outputs["task_loss"]), float(outputs["loss"])
        if math.isnan(self.first_loss) and math.isfinite(task):
            self.first_loss = task
        if math.isfinite(self.first_loss):
            self.divergence_threshold = self.factor * max(self.first_loss, self.floor)
        value = task if math.isfinite(total) else total
        diverged, _ = self._evaluate_stopping_criteria(torch.tensor(value))
        if trainer.world_size > 1:  # every process stops together (one alone would hang the others)
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise self._error(trainer, value)

    def _error(self, trainer: pl.Trainer, value: float) -> DivergedError:
        lr = trainer.optimizers[0].param_groups[-1]["lr"] if trainer.optimizers else float("nan")
        first = self.first_loss
        what = (
            f"exploded to {value:.3g} ({value / first:.3g}x its first value {first:.3g})"
            if math.isfinite(value)
            else f"became {value}"
        )
        return DivergedError(
            f"Training diverged: the loss {what} at step {self._step} (epoch {trainer.current_epoch}, learning "
            f"rate {lr:.3g}); lower optimizer.lr or set trainer.gradient_clip_val=1.0.",
            step=self._step,
            learning_rate=float(lr),
            loss=value,
        )

    # EarlyStopping's own checks at the end of epochs and validations: the step check replaces them.
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        return None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self.first_loss = float(state.pop("first_loss", math.nan))
        super().load_state_dict(state)
