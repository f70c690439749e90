"""What a run's `results.json` holds beyond the metrics: its opening record, the objective, the selected
checkpoint, and the metadata exported beside the backbone."""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from transferlab.backbones import Backbone
from transferlab.backbones.weights import EXPORT_WEIGHTS, HEAD_FILE
from transferlab.run.results import git_info, package_versions
from transferlab.run.resume import saved_best_score
from transferlab.run.runtime import overrides, resolved_config

log = logging.getLogger("transferlab")


def base_record(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The record a run starts with (`status: running`), before anything is built."""
    return {
        "status": "running",
        "error": None,
        "metrics": {},
        "strategy": cfg.strategy.name,
        "backbone": cfg.backbone.name,
        "dataset": cfg.dataset.name,
        "seed": cfg.seed,
        "experiment": cfg.experiment_name,
        "tuning": tuning_marks(cfg),
        "objective": {"name": cfg.get("optimized_metric"), "mode": cfg.get("optimized_mode"), "value": None},
        "trainable_params": None,
        "total_params": None,
        "train_seconds": None,
        "peak_memory_mb": None,
        "weights_sha256": None,
        "output_dir": str(out),
        "host": platform.node(),
        "pid": os.getpid(),
        "started_at": time.time(),
        "config": resolved_config(cfg),
        "overrides": overrides(),
        "versions": package_versions(),
        "git": git_info(),
    }


def tuning_marks(cfg: DictConfig) -> dict[str, Any] | None:
    """Which tuning job this is (set by the Optuna sweeper), or None for a plain run."""
    tuning = cfg.get("tuning") or {}
    if not tuning.get("phase"):
        return None
    marks = {k: tuning.get(k) for k in ("phase", "arm", "block", "study", "trial", "params")}
    return OmegaConf.to_container(OmegaConf.create(marks), resolve=True)


def places(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The folders a failing file may be blamed on, by the key that names them."""
    paths = cfg.get("paths") or {}
    return {
        "hydra.run.dir": out,
        "paths.cache_dir": paths.get("cache_dir"),
        "dataset.root": cfg.dataset.get("root") if not OmegaConf.is_missing(cfg.dataset, "root") else None,
    }


def objective(cfg: DictConfig, trainer: pl.Trainer) -> dict[str, Any]:
    """`optimized_metric` of the selected model: the best checkpoint's score when the checkpoint callback
    monitors it (the default), else its value after the last epoch."""
    name = cfg.optimized_metric
    callback = trainer.checkpoint_callback
    score = getattr(callback, "best_model_score", None) if callback else None
    if score is None and callback is not None and Path(callback.best_model_path or "").is_file():
        score = saved_best_score(callback.best_model_path)  # ddp_spawn returns the path, not the score
    if score is not None and getattr(callback, "monitor", None) == name:
        value, where = float(score), "best checkpoint"
    else:
        value = float(trainer.callback_metrics[name]) if name in trainer.callback_metrics else None
        where = "last epoch"
    return {"name": name, "mode": cfg.optimized_mode, "value": value, "selected_at": where}


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback else ""
    if best and Path(best).is_file():
        return best
    log.warning("No best checkpoint (e.g. fast_dev_run): testing the final weights.")
    return None


def logged_metrics(trainer: pl.Trainer, keep: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(keep)}


def export_meta(
    cfg: DictConfig, backbone: Backbone, datamodule: Any, record: dict[str, Any]
) -> dict[str, Any]:
    """`backbone.json`: what a later run needs to load this backbone and score it on this task again."""
    return {
        "architecture": backbone.name,
        "kwargs": backbone.kwargs,
        "num_features": backbone.num_features,
        "stages": backbone.describe_stages(),
        "source_dataset": datamodule.name,
        "source_classes": datamodule.class_names,
        "image_size": datamodule.image_size,
        "strategy": record["strategy"],
        "metrics": record["metrics"],
        "initial_weights": backbone.weights,
        "file": EXPORT_WEIGHTS,
        # what a later run needs to score this backbone on this task again (forgetting)
        "head_file": HEAD_FILE,
        "dataset_config": {k: v for k, v in resolved_config(cfg)["dataset"].items() if k != "search_space"},
    }
