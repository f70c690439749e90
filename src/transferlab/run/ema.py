"""EMA of the weights (`ema.enabled=true`): Lightning's `EMAWeightAveraging` callback, with two mends.

Lightning validates and checkpoints the average (a checkpoint's `state_dict` is the EMA; the raw weights
and the average's state travel beside it, so a resumed run continues both), and the model holds the
average when training ends. Mended here:
- testing a checkpoint after the fit: Lightning's callback would load the raw weights
  (`current_model_state`) over the averaged ones; outside fitting the checkpoint's averaged weights stay;
- the average lives on the training device (Lightning takes the module's device in `setup`, before the
  module is moved there);
- optional warmup, as timm's EMA and TensorFlow's: decay_t = min(decay, (1 + n) / (10 + n)) after n
  updates, so a short fine-tuning run is not dominated by the starting weights.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


def ema_avg_fn(decay: float, warmup: bool):
    """`AveragedModel`'s avg_fn: decay * ema + (1 - decay) * current, the decay warmed up if asked."""

    @torch.no_grad()
    def update(ema: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged))) if warmup else decay
        return d * ema + (1.0 - d) * current

    return update


class EMA(EMAWeightAveraging):
    """Exponential moving average of the weights, updated after every optimizer step."""

    def __init__(self, decay: float = 0.999, warmup: bool = True, **kwargs: Any):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema.decay={decay} must be in [0, 1]")
        super().__init__(decay=decay, **kwargs)
        self._kwargs["avg_fn"] = ema_avg_fn(decay, warmup)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._device is None:
            self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # testing: the checkpoint's weights are the average
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
