"""One job: build -> fit -> test (best checkpoint) -> export -> results.json.

`transferlab.train` is the Hydra entry point; it imports this module only when a job runs.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from transferlab.backbones import Backbone
from transferlab.backbones.weights import EXPORT_WEIGHTS, export_backbone
from transferlab.core.atomic import remove_temporaries
from transferlab.core.config import without_search_space
from transferlab.core.errors import DivergedError, TransferlabError, TrialPruned, did_you_mean, instantiate
from transferlab.core.explain import explain, log_traceback
from transferlab.core.faults import crash_point
from transferlab.core.schema import check as check_config
from transferlab.core.secrets import install_env_guard, refuse_secret_interpolations
from transferlab.data import ImageFolderDataModule
from transferlab.data.features import CachedFeatures
from transferlab.data.image_folder import in_loky_worker
from transferlab.data.prefix import FrozenPrefix
from transferlab.evaluation.runner import Evaluation, weight_callbacks
from transferlab.evaluation.soup import cook
from transferlab.metrics import user_metrics
from transferlab.module import TransferModule
from transferlab.multitask import JointDataModule, MultiTaskModule, build_source_datamodule
from transferlab.run.checkpoint import (
    AtomicCheckpointIO,
    InterruptCheckpoint,
    RunLock,
    check_disk_space,
    last_checkpoint,
    step_checkpoint,
)
from transferlab.run.forgetting import HEAD_FILE, SourceTask, accuracy, export_head
from transferlab.run.loggers import build_loggers, finish_wandb, log_config, remember_wandb_id, report_run
from transferlab.run.pretrain import SOURCE, ensure_source
from transferlab.run.results import (
    RESULTS_FILE,
    git_info,
    package_versions,
    peak_memory_mb,
    release_space,
    reserve_space,
    write_json_atomic,
)
from transferlab.run.resume import StartPlan, plan_start, saved_best_score
from transferlab.run.runtime import is_multirun, is_rank_zero, overrides, resolved_config
from transferlab.run.summary import print_summary
from transferlab.strategies import TransferStrategy, build_strategy
from transferlab.strategies.probe import KNNHead, fit_linear_head
from transferlab.strategies.regularizers import Regularizer

log = logging.getLogger("transferlab")

# Frozen backbone parts are deliberately in eval mode at train start (BatchNorm statistics untouched).
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job in its directory and write its `results.json`; job failures are recorded, not raised.

    The directory is locked for the whole run. `results.json` says `running` from the start (a killed run
    leaves that behind) and is replaced atomically by the final record. A run refused before it starts
    (directory locked by another run, or holding a run it may not continue) writes nothing there.
    """
    logging.raiseExceptions = False  # a log handler that cannot write (a full disk): no traceback per message
    install_env_guard()  # jobs a sweeper or SLURM starts skip the pre-flight: `${oc.env:<secret>}` is refused here
    out = Path(cfg.paths.output_dir).resolve()
    try:
        refuse_secret_interpolations(OmegaConf.to_container(cfg, resolve=False))
        record = _base_record(cfg, out)
    except (TransferlabError, OmegaConfBaseException) as exc:  # refused before anything is written
        error = explain(exc)
        log.error("%s", error)
        return {"status": "failed", "error": error, "metrics": {}, "objective": {"value": None}}
    try:
        check_config(cfg)
        _check_output_dir(out)
        with RunLock(out) if is_rank_zero() else contextlib.nullcontext():
            plan = plan_start(cfg, out, record["config"])
            if plan.finished is not None:
                return plan.finished
            return _run(cfg, out, record, plan)
    except TransferlabError as exc:  # refused at the door: nothing in `out` is touched
        record.update(status="failed", error=explain(exc))
        log.error("%s", exc)
        return record


def _run(cfg: DictConfig, out: Path, record: dict[str, Any], plan: StartPlan) -> dict[str, Any]:
    trainer: pl.Trainer | None = None
    interrupt = InterruptCheckpoint(out / "checkpoints")
    interrupted: BaseException | None = None
    if is_rank_zero():
        remove_temporaries(out)  # what writers killed mid-write left behind
        record["attempts"] = plan.attempts
        write_json_atomic(out / RESULTS_FILE, record)  # status: running
        reserve_space(out)  # so the final record can still be written if the disk fills
    try:
        _check_device(cfg)
        strategy = build_strategy(cfg.strategy)
        pretrained = _resolve_pretrained(cfg, strategy, record)
        pl.seed_everything(cfg.seed, workers=True)
        backbone = _build_backbone(cfg, strategy, pretrained)
        record["weights"] = backbone.weights
        record["weights_sha256"] = backbone.weights.get("sha256")
        datamodule = _build_datamodule(cfg, backbone)
        record["class_names"] = datamodule.class_names
        record["data"] = datamodule.describe()
        evaluation = Evaluation.plan(cfg, datamodule)  # extra test sets are checked before training
        source_data = build_source_datamodule(cfg, backbone, datamodule) if strategy.joint_source else None
        module = _build_module(cfg, backbone, strategy, datamodule, source_data)
        _check_objective_is_logged(cfg, module)
        source_task = SourceTask.of(backbone.weights, backbone, datamodule.image_size)
        source_before = source_task.score(backbone) if source_task else None
        fit_data = _maybe_cache_features(cfg, strategy, module, datamodule, record)
        prefix, fit_data = _maybe_cache_prefix(cfg, strategy, module, fit_data, record)
        if source_data is not None:
            fit_data = JointDataModule(datamodule, source_data, strategy.mode)
        check_disk_space(out, module, reserve_mb=float(cfg.paths.get("disk_reserve_mb") or 0))
        if plan.checkpoint:
            record["resumed_from" if cfg.get("resume") else "started_from"] = plan.checkpoint
        trainer = _build_trainer(cfg, out, plan, interrupt)
        log_config(trainer, cfg)
        remember_wandb_id(trainer, out, record)
        started = time.perf_counter()
        if (cfg.get("soup") or {}).get("study"):  # a greedy soup of a study's trials: nothing trains
            record["soup"] = cook(cfg, module, datamodule, trainer.strategy.root_device)
            trainer.validate(module, datamodule=fit_data, verbose=False)
        elif strategy.head_solver in ("lbfgs", "knn"):  # fitted outright on the cached features
            record["probe"] = fit_head_directly(module, fit_data, strategy)
            trainer.validate(module, datamodule=fit_data, verbose=False)
        else:
            trainer.fit(module, datamodule=fit_data, ckpt_path=plan.checkpoint)
        record["train_seconds"] = round(time.perf_counter() - started, 3)
        crash_point("after_fit")
        record["trainable_params"], record["total_params"] = module.parameter_counts()
        record["strategy_details"] = module.strategy_summary()
        record["param_groups"] = getattr(module, "param_group_record", None)  # the recipe: name, lr, decay
        fit_metrics = module.fit_metrics()
        record["objective"] = _objective(cfg, trainer)
        best = _best_checkpoint(trainer)
        record["best_checkpoint"] = best
        if cfg.get("test", True):
            trainer.test(module, datamodule=fit_data, ckpt_path=best, verbose=False)
            fit_metrics.update(_metrics(trainer, ("test/",)))
            record["test_samples"] = int(fit_metrics.pop("test/samples"))
            if module.test_confusion is not None:  # rows: true class, columns: predicted
                record["confusion_matrix"] = module.test_confusion
        if prefix is not None:
            prefix.restore()  # the whole network again, for what follows and the export
        if cfg.get("test", True):  # extra test sets, calibration, WiSE-FT: the selected weights again
            fit_metrics.update(evaluation.run(trainer, module, datamodule, out, record))
        if source_task is not None:  # what transfer cost the source task
            fit_metrics.update(
                {"source/acc_before": source_before, "source/acc_after": source_task.score(backbone)}
            )
        if source_data is not None:  # the shared backbone's source head, on the source test split
            fit_metrics["source/acc"] = accuracy(
                backbone, module.source_head, source_data.eval_dataloader("test"), source_data.num_classes
            )
        record["metrics"] = dict(sorted(fit_metrics.items()))
        record["epochs"] = trainer.current_epoch
        if trainer.is_global_zero:
            if strategy.head_solver != "knn":  # a k-NN has no head to export
                export_head(module.head, out)
            record["export"] = export_backbone(
                strategy.export_model(backbone), out, _export_meta(cfg, backbone, datamodule, record)
            )
        record["status"] = "ok"
        if trainer.is_global_zero:
            report_run(trainer, record, out)
    except DivergedError as exc:  # not success, and not a crash either: the settings made training blow up
        record.update(status="diverged", error=str(exc), diverged=exc.details)
    except MisconfigurationException as exc:  # Lightning refused a setting: its words, without the traceback
        record.update(status="failed", error=f"Lightning refused the configuration: {exc}")
    except TransferlabError as exc:
        record.update(status="failed", error=explain(exc))
    except TrialPruned as exc:  # the tuner stopped a hopeless trial: not a failure
        record.update(status="pruned", error=str(exc))
    except (KeyboardInterrupt, SystemExit) as exc:  # SIGTERM / SIGINT, turned into exits by Lightning
        interrupted = exc
        why = interrupt.signal or type(exc).__name__
        record.update(
            status="interrupted",
            error=f"Interrupted by {why}; checkpoint saved. Continue with: resume=true hydra.run.dir={out}",
        )
    except Exception as exc:  # one line naming the file or key and the fix; the traceback in train.log
        record.update(status="failed", error=explain(exc, _places(cfg, out)))
        log_traceback(exc)
    finally:
        finish_wandb()
        record["peak_memory_mb"] = round(peak_memory_mb(), 1)
        record["wall_seconds"] = round(time.time() - record["started_at"], 3)
    if trainer.is_global_zero if trainer is not None else is_rank_zero():  # DDP: rank 0 writes
        try:
            release_space(out)
            write_json_atomic(out / RESULTS_FILE, record)
        except OSError as exc:  # the output directory itself is the problem (already in the error)
            log.error("Could not write %s: %s", out / RESULTS_FILE, explain(exc, _places(cfg, out)))
        print_summary(record, out)
    if interrupted is not None:
        sys.exit(143 if interrupt.signal == "SIGTERM" else 130)
    return record


# ----------------------------------------------------------------------------- building blocks
def _places(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The folders a failing file may be blamed on, by the key that names them."""
    paths = cfg.get("paths") or {}
    return {
        "hydra.run.dir": out,
        "paths.cache_dir": paths.get("cache_dir"),
        "dataset.root": cfg.dataset.get("root") if not OmegaConf.is_missing(cfg.dataset, "root") else None,
    }


def _base_record(cfg: DictConfig, out: Path) -> dict[str, Any]:
    return {
        "status": "running",
        "error": None,
        "metrics": {},
        "strategy": cfg.strategy.name,
        "backbone": cfg.backbone.name,
        "dataset": cfg.dataset.name,
        "seed": cfg.seed,
        "experiment": cfg.experiment_name,
        "tuning": _tuning_marks(cfg),
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


def _tuning_marks(cfg: DictConfig) -> dict[str, Any] | None:
    """Which tuning job this is (set by the Optuna sweeper), or None for a plain run."""
    tuning = cfg.get("tuning") or {}
    if not tuning.get("phase"):
        return None
    marks = {k: tuning.get(k) for k in ("phase", "arm", "block", "study", "trial", "params")}
    return OmegaConf.to_container(OmegaConf.create(marks), resolve=True)


def _check_objective_is_logged(cfg: DictConfig, module: TransferModule) -> None:
    logged = module.validation_metric_names()
    if cfg.optimized_metric not in logged:
        raise TransferlabError(
            f"optimized_metric={cfg.optimized_metric} is never logged.{did_you_mean(cfg.optimized_metric, logged)} "
            f"Validation metrics: {', '.join(logged)}."
        )


def _pruning_callback(cfg: DictConfig) -> list[pl.Callback]:
    """Trials of an Optuna study report each epoch's objective and may be pruned."""
    tuning = cfg.get("tuning") or {}
    if not (tuning.get("prune") and tuning.get("phase") == "trial" and tuning.get("storage")):
        return []
    from transferlab.tuning.pruning import OptunaPruning

    return [OptunaPruning(tuning.storage, tuning.study, tuning.trial, monitor=cfg.optimized_metric)]


def _objective(cfg: DictConfig, trainer: pl.Trainer) -> dict[str, Any]:
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


def _check_output_dir(out: Path) -> None:
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


def _check_device(cfg: DictConfig) -> None:
    """Refuse a device this machine does not have, with the fix."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise TransferlabError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU visible to PyTorch "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use trainer=cpu, or check the driver."
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise TransferlabError("trainer.accelerator=mps but MPS is not available here; use trainer=cpu.")


def _build_trainer(cfg: DictConfig, out: Path, plan: StartPlan, interrupt: InterruptCheckpoint) -> pl.Trainer:
    def build(trainer_cfg: DictConfig) -> pl.Trainer:
        return instantiate(
            trainer_cfg,
            logger=build_loggers(cfg, out, resuming=bool(plan.checkpoint and cfg.get("resume"))),
            callbacks=[
                *_build_callbacks(cfg),
                *_pruning_callback(cfg),
                *weight_callbacks(cfg, out),
                interrupt,
            ],
            plugins=[AtomicCheckpointIO()],
        )

    trainer = build(cfg.trainer)
    launcher = trainer.strategy.launcher
    if is_multirun() and isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1:
        # Lightning's script launcher starts each rank by re-running the command line, which inside `-m`
        # re-runs the whole sweep (Lightning #15737). Spawned ranks run just this job.
        log.info(
            "Inside a Hydra multirun: DDP starts its %d processes with start_method=spawn.",
            launcher.num_processes,
        )
        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        trainer = build(OmegaConf.create({**trainer_cfg, "strategy": _spawned(cfg.trainer.strategy)}))
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher) and in_loky_worker():
        # Spawned children copy the parent's start method, and a joblib (loky) worker's is "loky", which
        # they cannot load: they die at start and the job hangs. Spawn them as plain spawned processes.
        multiprocessing.set_start_method("spawn", force=True)
    return trainer


def _spawned(strategy: Any) -> Any:
    if isinstance(strategy, str):
        return strategy.replace("ddp", "ddp_spawn", 1)
    return {**OmegaConf.to_container(strategy, resolve=True), "start_method": "spawn"}


def _resolve_pretrained(cfg: DictConfig, strategy: TransferStrategy, record: dict[str, Any]) -> Any:
    """`backbone.pretrained`, with `source` replaced by the (cached) source-pretraining run directory."""
    pretrained = cfg.backbone.pretrained
    if strategy.random_init:
        if pretrained not in (False, None):
            log.info("Strategy %s starts from random weights: backbone.pretrained is ignored.", strategy.name)
        return False
    if pretrained == SOURCE:
        record["source"] = ensure_source(cfg, run=train)
        return record["source"]["run_dir"]
    return pretrained


def _build_backbone(cfg: DictConfig, strategy: TransferStrategy, pretrained: Any) -> Backbone:
    return instantiate(
        cfg.backbone,
        pretrained=pretrained,
        _convert_="all",
        kind=Backbone,
        example="transferlab.backbones.create_backbone",
    )


def _build_module(cfg, backbone, strategy, datamodule, source_data) -> TransferModule:
    kwargs: dict[str, Any] = {
        "num_classes": datamodule.num_classes,
        "optimizer": instantiate(cfg.optimizer, kind=torch.optim.Optimizer, example="torch.optim.AdamW"),
        "scheduler": instantiate(
            cfg.scheduler,
            kind=torch.optim.lr_scheduler.LRScheduler,
            example="transferlab.strategies.schedulers.warmup_cosine",
        )
        if cfg.get("scheduler")
        else None,
        "head_dropout": cfg.head.dropout,
        "label_smoothing": cfg.head.label_smoothing,
        "class_names": datamodule.class_names,
        "regularizer": _build_regularizer(cfg),
        "metrics": user_metrics(cfg.get("metrics"), datamodule.num_classes),
    }
    if source_data is not None:
        return MultiTaskModule(backbone, strategy, source_classes=source_data.num_classes, **kwargs)
    return TransferModule(backbone, strategy, **kwargs)


def _build_regularizer(cfg: DictConfig) -> Regularizer | None:
    conf = cfg.get("regularizer")
    if not conf or conf.get("name", "none") == "none":
        return None
    return instantiate(
        without_search_space(conf), kind=Regularizer, example="transferlab.strategies.regularizers.L2SP"
    )


def _build_datamodule(cfg: DictConfig, backbone: Backbone) -> ImageFolderDataModule:
    if OmegaConf.is_missing(cfg.dataset, "root"):
        raise TransferlabError(
            f"dataset.root is not set for dataset={cfg.dataset.name}; add dataset.root=DIR with "
            "DIR/train/<class>/* and DIR/test/<class>/* images."
        )
    datamodule = instantiate(
        cfg.dataset,
        data_config=backbone.data_config,
        _convert_="all",
        kind=pl.LightningDataModule,
        example="transferlab.data.ImageFolderDataModule",
    )
    datamodule.setup("fit")
    return datamodule


def _maybe_cache_features(cfg, strategy, module, datamodule, record) -> pl.LightningDataModule:
    if not strategy.caches_features:
        return datamodule
    cache = strategy.cache_features
    augment_on = datamodule.augment.active
    if strategy.head_solver in ("lbfgs", "knn") and augment_on:
        raise TransferlabError(
            f"strategy.head_solver={strategy.head_solver} fits the head once on fixed features, but training "
            "augmentation is on (dataset.augment): the features would change every epoch. Set "
            "dataset.augment.enabled=false, or strategy.head_solver=sgd to train the head with augmentation."
        )
    if cache is None:
        cache = not augment_on or strategy.head_solver == "knn"
    elif cache and augment_on:
        log.warning(
            "strategy.cache_features=true: training augmentation is ignored (features are cached once)."
        )
    if strategy.head_solver is None:
        strategy.head_solver = "lbfgs" if cache else "sgd"
    record["feature_cache"] = {"enabled": bool(cache)}
    if not cache:
        return datamodule
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    device = "cuda" if torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto") else "cpu"
    cached = CachedFeatures(
        datamodule, module.backbone, Path(cfg.paths.cache_dir).resolve() / "features", device=device
    )
    cached.setup()
    module.use_cached_features = True
    record["feature_cache"].update(hits=cached.hits, misses=cached.misses, dir=str(cached.cache_dir))
    return cached


def fit_head_directly(module: TransferModule, features: CachedFeatures, strategy) -> dict[str, Any]:
    """The head of an L-BFGS probe or a k-NN, fitted on the cached features (no training loop)."""
    train, val = features.tensors["train"], features.tensors["val"]
    if strategy.head_solver == "knn":
        module.replace_head(
            KNNHead(*train, module.num_classes, k=strategy.k, temperature=strategy.temperature)
        )
        return {"solver": "knn", "k": strategy.k, "temperature": strategy.temperature, "bank": len(train[1])}
    head, fit = fit_linear_head(train, val, module.num_classes)
    module.replace_head(head)
    log.info("L-BFGS probe: L2 %g chosen on validation (val/acc per L2: %s).", fit.l2, fit.val_acc)
    return vars(fit)


def _maybe_cache_prefix(cfg, strategy, module, datamodule, record):
    """Cache the frozen prefix's activations for partial fine-tuning when that is exact; the log says
    when it is used and why not."""
    if getattr(strategy, "cache_prefix", False) is False:
        return None, datamodule
    why_not = None
    if strategy.train_bn:
        why_not = "frozen BatchNorm layers train (strategy.train_bn=true)"
    elif getattr(datamodule, "augment", None) is None or datamodule.augment.active:
        why_not = "training augmentation is on"
    elif module.regularizer is not None:
        why_not = f"regularizer={module.regularizer.name} needs the whole network each step"
    prefix = FrozenPrefix(module.backbone.model, module._frozen_ids) if why_not is None else None
    if prefix is not None and prefix.boundary is None:
        why_not = "no leading stage is frozen"
    if prefix is not None and why_not is None:
        x, _ = next(iter(datamodule.eval_dataloader("train")))
        if not prefix.agrees(x[:8]):
            why_not = "the backbone's forward is not a plain sequence of its stages (results would differ)"
    if why_not is not None:
        log.info("Frozen-prefix cache not used: %s.", why_not)
        record["prefix_cache"] = {"enabled": False, "why_not": why_not}
        return None, datamodule
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    device = "cuda" if torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto") else "cpu"
    cached = CachedFeatures(
        datamodule,
        module.backbone,
        Path(cfg.paths.cache_dir).resolve() / "features",
        device=device,
        compute=prefix.activations,
        kind=f"prefix:{prefix.boundary}",
    )
    cached.setup()
    prefix.skip()
    log.info(
        "Frozen-prefix cache used: %s computed once, the model trains from there.", "+".join(prefix.names)
    )
    record["prefix_cache"] = {
        "enabled": True,
        "boundary": prefix.boundary,
        "modules": prefix.names,
        "hits": cached.hits,
    }
    return prefix, cached


def _build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    confs = {k: c for k, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c}
    callbacks = []
    for key, conf in confs.items():
        steps = conf.get("every_n_train_steps") if key == "model_checkpoint" else None
        last = bool(conf.get("save_last")) if key == "model_checkpoint" else False
        if (
            steps or last
        ):  # Lightning's ModelCheckpoint takes one trigger: steps get a checkpoint of their own
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


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback else ""
    if best and Path(best).is_file():
        return best
    log.warning("No best checkpoint (e.g. fast_dev_run): testing the final weights.")
    return None


def _metrics(trainer: pl.Trainer, keep: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(keep)}


def _export_meta(cfg, backbone: Backbone, datamodule: ImageFolderDataModule, record) -> dict[str, Any]:
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


def run_task(cfg: DictConfig) -> float | None:
    """The body of the Hydra task function (see `transferlab.train.task`)."""
    record = train(cfg)
    if record["status"] != "ok" and not is_multirun():
        print(f"error: {record['error']}", file=sys.stderr)
        sys.exit(1)
    return record["objective"]["value"] if record["status"] == "ok" else None
