"""Loggers of a run: instantiation, W&B names, groups and ids, the resolved config, closing W&B."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from transferlab.errors import instantiate
from transferlab.runtime import is_multirun, overrides, resolved_config

WANDB_ID_FILE = "wandb_run_id"


def build_loggers(cfg: DictConfig, out: Path, resuming: bool = False) -> list[Any]:
    loggers = []
    for key, conf in (cfg.get("logger") or {}).items():
        if not conf or "_target_" not in conf:
            continue
        if key == "wandb":
            conf = OmegaConf.create(
                OmegaConf.to_container(conf, resolve=True)
            )  # not struct: keys may be added
            conf = OmegaConf.merge(conf, wandb_names(cfg, conf))
            id_file = out / WANDB_ID_FILE
            if resuming and id_file.is_file():  # the resumed run continues the same W&B run
                conf = OmegaConf.merge(conf, {"id": id_file.read_text().strip(), "resume": "allow"})
        loggers.append(instantiate(conf, _convert_="all"))
    return loggers


def remember_wandb_id(trainer: pl.Trainer, out: Path, record: dict[str, Any]) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.WandbLogger) and trainer.is_global_zero:
            run = logger.experiment
            record.update(wandb_id=run.id, wandb_group=run.group, wandb_project=run.project)
            (out / WANDB_ID_FILE).write_text(run.id)


def wandb_names(cfg: DictConfig, conf: DictConfig) -> dict[str, Any]:
    """Run name from the overrides; in a sweep, the group names the sweep (experiment/sweep time)."""
    names: dict[str, Any] = {}
    if not conf.get("name"):
        names["name"] = run_name(cfg)
    if is_multirun() and conf.get("group") == cfg.experiment_name:
        names["group"] = f"{cfg.experiment_name}/{Path(HydraConfig.get().sweep.dir).name}"
    return names


def run_name(cfg: DictConfig) -> str:
    chosen = [o for o in overrides() if not o.startswith(("paths.", "hydra.", "logger."))]
    return ",".join(chosen) or f"{cfg.strategy.name}-{cfg.backbone.name}-s{cfg.seed}"


def log_config(trainer: pl.Trainer, cfg: DictConfig) -> None:
    resolved = resolved_config(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)


def finish_wandb() -> None:
    """Close the W&B run of this job so the next multirun job starts its own."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=0)
