"""Pruning from per-epoch validation metrics: a Lightning callback that reports to its Optuna trial.

The trial runs in whatever process the Hydra launcher chose, so it reaches its study through the
study's on-disk storage (never a pickled trial object).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
import pytorch_lightning as pl

from transferlab.core.errors import TransferlabError, TrialPruned
from transferlab.tuning.storage import open_storage

log = logging.getLogger(__name__)
# Study user attribute: the pruner as data, {"name": <a key of PRUNERS>, "kwargs": {scalars}}. The journal
# is a file anyone with write access to the sweep directory controls: it never names code to run.
PRUNER_ATTR = "pruner"
PRUNERS = {
    "MedianPruner": optuna.pruners.MedianPruner,
    "PercentilePruner": optuna.pruners.PercentilePruner,
    "SuccessiveHalvingPruner": optuna.pruners.SuccessiveHalvingPruner,
    "HyperbandPruner": optuna.pruners.HyperbandPruner,
    "ThresholdPruner": optuna.pruners.ThresholdPruner,
    "NopPruner": optuna.pruners.NopPruner,
}
_SCALARS = (bool, int, float, str, type(None))


def pruner_record(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sweeper's pruner config (`_target_` + arguments) as data for the study: name and scalar kwargs."""
    if not config:
        return None
    config = dict(config)
    target = str(config.pop("_target_", ""))
    name = target.rsplit(".", 1)[-1]
    if target not in (f"optuna.pruners.{name}", name) or name not in PRUNERS:
        raise TransferlabError(
            f"hydra.sweeper.pruner._target_={target} is not one of Optuna's pruners "
            f"({', '.join('optuna.pruners.' + n for n in PRUNERS)})."
        )
    return {"name": name, "kwargs": _checked_kwargs(name, config, "hydra.sweeper.pruner")}


def pruner_from_record(record: Any, where: str) -> optuna.pruners.BasePruner:
    """Build the pruner a study's record names, from our own table only; anything else is refused."""
    if not isinstance(record, dict) or set(record) != {"name", "kwargs"} or record["name"] not in PRUNERS:
        raise TransferlabError(
            f"{where}: the study's '{PRUNER_ATTR}' attribute is not a pruner record "
            f"(expected {{name: one of {', '.join(PRUNERS)}, kwargs: {{...}}}}); the study storage was "
            "changed by something other than transferlab: start the sweep in a new hydra.sweep.dir."
        )
    kwargs = _checked_kwargs(record["name"], record["kwargs"], where)
    try:
        return PRUNERS[record["name"]](**kwargs)
    except (TypeError, ValueError) as exc:
        raise TransferlabError(f"{where}: {record['name']}({kwargs}) refused its arguments: {exc}") from None


def _checked_kwargs(name: str, kwargs: Any, where: str) -> dict[str, Any]:
    if not isinstance(kwargs, dict) or not all(
        isinstance(k, str) and isinstance(v, _SCALARS) for k, v in kwargs.items()
    ):
        raise TransferlabError(
            f"{where}: {name}'s arguments must be plain numbers, strings or null: {kwargs!r}"
        )
    return dict(kwargs)


class OptunaPruning(pl.Callback):
    """After each validation: report `monitor` to trial `trial_number` of `study`, and stop the
    run with `TrialPruned` when the study's pruner says so."""

    def __init__(self, storage: str, study: str, trial_number: int, monitor: str):
        self.monitor = monitor
        self.trial_number = int(trial_number)
        loaded = optuna.load_study(study_name=study, storage=open_storage(storage))
        # Pruners are not kept in the storage: the sweeper records its pruner's config in the study.
        record = loaded.user_attrs.get(PRUNER_ATTR)
        if record is not None:
            pruner = pruner_from_record(record, where=f"tuning.storage={storage} (study {study})")
            loaded = optuna.load_study(study_name=study, storage=loaded._storage, pruner=pruner)
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
