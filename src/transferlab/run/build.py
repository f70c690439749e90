"""The parts of one run, built from its config: backbone, data, module, trainer and its callbacks, and
the checks that refuse a run before it trains (device, output directory, objective)."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from transferlab.backbones import Backbone
from transferlab.core.config import without_search_space
from transferlab.core.errors import TransferlabError, did_you_mean, instantiate
from transferlab.data.loaders import in_loky_worker
from transferlab.evaluation.wise import WiseAnchor
from transferlab.metrics import user_metrics
from transferlab.run.checkpoint import AtomicCheckpointIO, last_checkpoint, step_checkpoint
from transferlab.run.divergence import DivergenceGuard
from transferlab.run.loggers import build_loggers
from transferlab.run.pretrain import SOURCE, ensure_source
from transferlab.run.ranks import START_METHOD, ForkServerLauncher
from transferlab.run.resume import StartPlan
from transferlab.run.resume_repair import ResumeRepair
from transferlab.run.runtime import is_multirun
from transferlab.strategies import TransferStrategy
from transferlab.strategies.context import RunContext
from transferlab.strategies.regularizers import Regularizer

log = logging.getLogger("transferlab")


# ----------------------------------------------------------------------------- model and data
def resolve_pretrained(cfg: DictConfig, strategy: TransferStrategy, record: dict[str, Any], run: Any) -> Any:
    """The weights the backbone starts from: the strategy's choice, with `source` replaced by the
    (cached) source-pretraining run directory (`run` trains it when missing)."""
    pretrained = strategy.initial_weights(cfg.backbone.pretrained)
    if pretrained == SOURCE:
        record["source"] = ensure_source(cfg, run=run)
        return record["source"]["run_dir"]
    return pretrained


def build_backbone(cfg: DictConfig, pretrained: Any) -> Backbone:
    return instantiate(
        cfg.backbone,
        pretrained=pretrained,
        _convert_="all",
        kind=Backbone,
        example="transferlab.backbones.create_backbone",
    )


def build_datamodule(cfg: DictConfig, backbone: Backbone) -> pl.LightningDataModule:
    """The target task's data module, set up for fitting (a `dataset.root=???` was refused by the schema)."""
    datamodule = instantiate(
        cfg.dataset,
        data_config=backbone.data_config,
        _convert_="all",
        kind=pl.LightningDataModule,
        example="transferlab.data.ImageFolderDataModule",
    )
    datamodule.setup("fit")
    return datamodule


def build_regularizer(cfg: DictConfig) -> Regularizer | None:
    conf = cfg.get("regularizer")
    if not conf or conf.get("name", "none") == "none":
        return None
    return instantiate(
        without_search_space(conf), kind=Regularizer, example="transferlab.strategies.regularizers.L2SP"
    )


def build_module(cfg: DictConfig, strategy: TransferStrategy, ctx: RunContext, backbone: Backbone) -> Any:
    """The LightningModule the strategy trains, with the run's optimizer, schedule, head and regularizer."""
    scheduler = None
    if cfg.get("scheduler"):
        scheduler = instantiate(
            cfg.scheduler,
            kind=torch.optim.lr_scheduler.LRScheduler,
            example="transferlab.strategies.schedulers.warmup_cosine",
        )
    return strategy.build_module(
        ctx,
        backbone,
        num_classes=ctx.datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer, kind=torch.optim.Optimizer, example="torch.optim.AdamW"),
        scheduler=scheduler,
        head_dropout=cfg.head.dropout,
        label_smoothing=cfg.head.label_smoothing,
        class_names=ctx.datamodule.class_names,
        regularizer=build_regularizer(cfg),
        metrics=user_metrics(cfg.get("metrics"), ctx.datamodule.num_classes),
    )


# ----------------------------------------------------------------------------- trainer
def build_trainer(cfg: DictConfig, out: Path, plan: StartPlan, callbacks: list[pl.Callback]) -> pl.Trainer:
    """The trainer with, in this order, the divergence guard, the `callbacks` group, Optuna pruning, the
    weight-space callbacks (WiSE-FT, EMA), the strategy's `callbacks`, and the resume repairs."""

    def build(trainer_cfg: DictConfig) -> pl.Trainer:
        return instantiate(
            trainer_cfg,
            logger=build_loggers(cfg, out, resuming=bool(plan.checkpoint and cfg.get("resume"))),
            callbacks=[
                DivergenceGuard(),
                *build_callbacks(cfg),
                *pruning_callback(cfg),
                *weight_callbacks(cfg, out),
                *callbacks,
                ResumeRepair(),
            ],
            plugins=[AtomicCheckpointIO()],
        )

    trainer = build(cfg.trainer)
    launcher = trainer.strategy.launcher
    if is_multirun() and isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1:
        # Lightning's script launcher starts each rank by re-running the command line, which inside `-m`
        # re-runs the whole sweep (Lightning #15737). Ranks forked from a fork server run just this job.
        log.info(
            "Inside a Hydra multirun: DDP starts its %d processes with start_method=%s.",
            launcher.num_processes,
            START_METHOD,
        )
        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        trainer = build(OmegaConf.create({**trainer_cfg, "strategy": _spawned(cfg.trainer.strategy)}))
        if START_METHOD == "forkserver":
            trainer.strategy._launcher = ForkServerLauncher(trainer.strategy)
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher) and in_loky_worker():
        # The ranks copy the parent's start method, and a joblib (loky) worker's is "loky", which they
        # cannot load: they die at start and the job hangs. Give them the plain "spawn".
        multiprocessing.set_start_method("spawn", force=True)
    return trainer


def _spawned(strategy: Any) -> Any:
    """The DDP strategy with a multiprocessing launcher (replaced by the fork server's)."""
    if isinstance(strategy, str):
        return strategy.replace("ddp", "ddp_spawn", 1)
    return {**OmegaConf.to_container(strategy, resolve=True), "start_method": START_METHOD}


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The `callbacks` group; a checkpoint's step or `save_last` trigger gets a checkpoint of its own."""
    confs = {k: c for k, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c}
    callbacks = []
    for key, conf in confs.items():
        steps = conf.get("every_n_train_steps") if key == "model_checkpoint" else None
        last = bool(conf.get("save_last")) if key == "model_checkpoint" else False
        if steps or last:  # Lightning's ModelCheckpoint takes one trigger
            conf = OmegaConf.merge(conf, {"every_n_train_steps": None, "save_last": False})
        callbacks.append(
            instantiate(conf, kind=pl.Callback, example="pytorch_lightning.callbacks.EarlyStopping")
        )
        # after the main one, which stays `trainer.checkpoint_callback` (the best checkpoint)
        if last:
            callbacks.append(last_checkpoint(conf.dirpath))
        if steps:
            callbacks.append(step_checkpoint(conf.dirpath, int(steps)))
    if cfg.trainer.get("enable_progress_bar") is False:  # trainer.enable_progress_bar=false wins
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    return callbacks


def pruning_callback(cfg: DictConfig) -> list[pl.Callback]:
    """Trials of an Optuna study report each epoch's objective and may be pruned."""
    tuning = cfg.get("tuning") or {}
    if not (tuning.get("prune") and tuning.get("phase") == "trial" and tuning.get("storage")):
        return []
    from transferlab.tuning.pruning import OptunaPruning

    return [OptunaPruning(tuning.storage, tuning.study, tuning.trial, monitor=cfg.optimized_metric)]


def weight_callbacks(cfg: DictConfig, out: Path) -> list[pl.Callback]:
    """The callbacks weight-space methods need during training (WiSE-FT's anchor, EMA)."""
    callbacks: list[pl.Callback] = []
    if (cfg.get("wise") or {}).get("enabled"):
        callbacks.append(WiseAnchor(out / "checkpoints"))
    ema = cfg.get("ema") or {}
    if ema.get("enabled"):
        from transferlab.run.ema import EMA

        callbacks.append(EMA(decay=float(ema.decay), warmup=bool(ema.get("warmup", True))))
    return callbacks


# ----------------------------------------------------------------------------- checks
def check_device(cfg: DictConfig) -> None:
    """Refuse a device this machine does not have, with the fix."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise TransferlabError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU visible to PyTorch "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use trainer=cpu, or check the driver."
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise TransferlabError("trainer.accelerator=mps but MPS is not available here; use trainer=cpu.")


def check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TransferlabError(
            f"Output directory {out} is not writable ({exc.strerror}); set hydra.run.dir (or paths.log_dir / "
            "TRANSFERLAB_OUTPUTS) to a writable folder."
        ) from None


def check_objective_is_logged(cfg: DictConfig, module: Any) -> None:
    logged = module.validation_metric_names()
    if cfg.optimized_metric not in logged:
        raise TransferlabError(
            f"optimized_metric={cfg.optimized_metric} is never logged.{did_you_mean(cfg.optimized_metric, logged)} "
            f"Validation metrics: {', '.join(logged)}."
        )
