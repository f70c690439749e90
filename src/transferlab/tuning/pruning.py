"""Pruning from per-epoch validation metrics: a Lightning callback that reports to its Optuna trial.

The trial runs in whatever process the Hydra launcher chose, so it reaches its study through the
study's on-disk storage (never a pickled trial object).
"""

from __future__ import annotations

import logging
import math

import optuna
import pytorch_lightning as pl
from hydra.utils import instantiate

from transferlab.core.errors import TrialPruned
from transferlab.tuning.storage import open_storage

log = logging.getLogger(__name__)
PRUNER_ATTR = "pruner"  # study user attribute: the pruner's config (`_target_` and arguments)


class OptunaPruning(pl.Callback):
    """After each validation: report `monitor` to trial `trial_number` of `study`, and stop the
    run with `TrialPruned` when the study's pruner says so."""

    def __init__(self, storage: str, study: str, trial_number: int, monitor: str):
        self.monitor = monitor
        self.trial_number = int(trial_number)
        loaded = optuna.load_study(study_name=study, storage=open_storage(storage))
        # Pruners are not kept in the storage: the sweeper records its pruner's config in the study.
        pruner_config = loaded.user_attrs.get(PRUNER_ATTR)
        if pruner_config:
            loaded = optuna.load_study(
                study_name=study, storage=loaded._storage, pruner=instantiate(pruner_config)
            )
        trial_id = loaded._storage.get_trial_id_from_study_id_trial_number(
            loaded._study_id, self.trial_number
        )
        self.trial = optuna.Trial(loaded, trial_id)
        self.last_value: float | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run that hook before the module logs the epoch's metrics.
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(value):
            return
        self.last_value = value
        prune = False
        if trainer.is_global_zero:
            self.trial.report(value, step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):  # every rank stops together under DDP
            message = f"Trial {self.trial_number} pruned at epoch {trainer.current_epoch} ({self.monitor}={value:.4g})"
            log.info(message)
            raise TrialPruned(message)
