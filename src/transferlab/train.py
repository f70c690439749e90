"""Hydra entry point: compose -> instantiate -> fit -> test (best checkpoint) -> results.json.

python -m transferlab.train [overrides]        (also: transferlab-train)
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from transferlab.backbones import Backbone
from transferlab.backbones.weights import EXPORT_WEIGHTS, export_backbone
from transferlab.checkpoint import AtomicCheckpointIO, InterruptCheckpoint, check_disk_space
from transferlab.data import ImageFolderDataModule
from transferlab.errors import TransferlabError, instantiate
from transferlab.features import CachedFeatures
from transferlab.module import TransferModule
from transferlab.pretrain import SOURCE, ensure_source
from transferlab.results import (
    RESULTS_FILE,
    git_info,
    package_versions,
    peak_memory_mb,
    read_results,
    redact,
    write_json_atomic,
)
from transferlab.strategies import TransferStrategy
from transferlab.summary import print_summary

log = logging.getLogger("transferlab")
WANDB_ID_FILE = "wandb_run_id"

# Frozen backbone parts are deliberately in eval mode at train start (BatchNorm statistics untouched).
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job and write its `results.json`; job failures are recorded, not raised."""
    out = Path(cfg.paths.output_dir).resolve()
    record = _base_record(cfg, out)
    finished = _finished_record(cfg, out, record)
    if finished is not None:
        return finished
    trainer: pl.Trainer | None = None
    interrupt = InterruptCheckpoint(out / "checkpoints")
    interrupted: BaseException | None = None
    csv_resume: tuple[Path, int] | None = None
    try:
        _check_output_dir(out)
        _check_launch(cfg)
        strategy: TransferStrategy = instantiate(cfg.strategy)
        pretrained = _resolve_pretrained(cfg, strategy, record)
        pl.seed_everything(cfg.seed, workers=True)
        backbone = _build_backbone(cfg, strategy, pretrained)
        record["weights"] = backbone.weights
        record["weights_sha256"] = backbone.weights.get("sha256")
        datamodule = _build_datamodule(cfg, backbone)
        record["class_names"] = datamodule.class_names
        record["data"] = datamodule.describe()
        module = TransferModule(
            backbone,
            strategy,
            num_classes=datamodule.num_classes,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
            head_dropout=cfg.head.dropout,
            label_smoothing=cfg.head.label_smoothing,
            class_names=datamodule.class_names,
        )
        fit_data = _maybe_cache_features(cfg, strategy, module, datamodule, record)
        check_disk_space(out, module, reserve_mb=float(cfg.paths.get("disk_reserve_mb") or 0))
        ckpt_path = _resume_checkpoint(cfg, out)
        if ckpt_path and is_rank_zero():
            csv_resume = _set_csv_aside(out, ckpt_path)
            record["resumed_from"] = ckpt_path
        trainer = instantiate(
            cfg.trainer,
            logger=_build_loggers(cfg, out, resuming=bool(ckpt_path)),
            callbacks=[*_build_callbacks(cfg), interrupt],
            plugins=[AtomicCheckpointIO()],
        )
        _log_config(trainer, cfg)
        _remember_wandb_id(trainer, out, record)
        started = time.perf_counter()
        trainer.fit(module, datamodule=fit_data, ckpt_path=ckpt_path)
        record["train_seconds"] = round(time.perf_counter() - started, 3)
        record["trainable_params"], record["total_params"] = module.parameter_counts()
        record["strategy_details"] = module.strategy_summary()
        fit_metrics = _metrics(trainer, ("val/acc_best",))
        best = _best_checkpoint(trainer)
        record["best_checkpoint"] = best
        trainer.test(module, datamodule=fit_data, ckpt_path=best, verbose=False)
        record["metrics"] = {**_metrics(trainer, ("test/",)), **fit_metrics}
        record["epochs"] = trainer.current_epoch
        if trainer.is_global_zero:
            record["export"] = export_backbone(
                strategy.export_model(backbone), out, _export_meta(cfg, backbone, datamodule, record)
            )
        record["status"] = "ok"
    except TransferlabError as exc:
        record.update(status="failed", error=str(exc))
    except (KeyboardInterrupt, SystemExit) as exc:  # SIGTERM / SIGINT, turned into exits by Lightning
        interrupted = exc
        why = interrupt.signal or type(exc).__name__
        record.update(
            status="interrupted",
            error=f"Interrupted by {why}; checkpoint saved. Continue with: resume=true hydra.run.dir={out}",
        )
    except Exception as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        log.error("Run failed:\n%s", record["traceback"])
    finally:
        _finish_wandb(trainer)
        if csv_resume is not None:
            _merge_csv(out, *csv_resume)
        record["peak_memory_mb"] = round(peak_memory_mb(), 1)
        record["wall_seconds"] = round(time.time() - record["started_at"], 3)
    if trainer.is_global_zero if trainer is not None else is_rank_zero():  # DDP: rank 0 writes
        try:
            write_json_atomic(out / RESULTS_FILE, record)
        except OSError as exc:  # the output directory itself is the problem (already in the error)
            log.error("Could not write %s: %s", out / RESULTS_FILE, exc)
        print_summary(record, out)
    if interrupted is not None:
        sys.exit(143 if interrupt.signal == "SIGTERM" else 130)
    return record


# ----------------------------------------------------------------------------- building blocks
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
        "trainable_params": None,
        "total_params": None,
        "train_seconds": None,
        "peak_memory_mb": None,
        "weights_sha256": None,
        "output_dir": str(out),
        "host": platform.node(),
        "pid": os.getpid(),
        "started_at": time.time(),
        "config": _resolved(cfg),
        "overrides": _overrides(),
        "versions": package_versions(),
        "git": git_info(),
    }


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config with secrets (API keys, tokens from the environment) replaced by '***'."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only resolves inside a Hydra run
        data = OmegaConf.to_container(cfg, resolve=False)
    return redact(data)


def _overrides() -> list[str]:
    """The job's command-line overrides (secrets redacted: reading them resolves interpolations)."""
    return redact(list(HydraConfig.get().overrides.task)) if HydraConfig.initialized() else []


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


def _check_launch(cfg: DictConfig) -> None:
    strategy = cfg.trainer.get("strategy")
    name = strategy if isinstance(strategy, str) else (strategy or {}).get("_target_", "")
    spawn = "spawn" in str(name) or (
        not isinstance(strategy, str) and strategy and strategy.get("start_method") == "spawn"
    )
    if is_multirun() and "ddp" in str(name).lower() and not spawn:
        raise TransferlabError(
            f"trainer.strategy={name} cannot run inside a Hydra multirun (-m): Lightning re-launches the command "
            "per rank. Use trainer.strategy=ddp_spawn for sweeps, or launch DDP runs one by one (torchrun/SLURM)."
        )


def _resolve_pretrained(cfg: DictConfig, strategy: TransferStrategy, record: dict[str, Any]) -> Any:
    """`backbone.pretrained`, with `source` replaced by the (cached) source-pretraining run directory."""
    pretrained = cfg.backbone.pretrained
    if strategy.random_init:
        if pretrained not in (False, None):
            log.info("Strategy %s starts from random weights: backbone.pretrained is ignored.", strategy.name)
        return False
    if pretrained == SOURCE:
        record["source"] = ensure_source(cfg)
        return record["source"]["run_dir"]
    return pretrained


def _build_backbone(cfg: DictConfig, strategy: TransferStrategy, pretrained: Any) -> Backbone:
    return instantiate(cfg.backbone, pretrained=pretrained, _convert_="all")


def _build_datamodule(cfg: DictConfig, backbone: Backbone) -> ImageFolderDataModule:
    if OmegaConf.is_missing(cfg.dataset, "root"):
        raise TransferlabError(
            f"dataset.root is not set for dataset={cfg.dataset.name}; add dataset.root=DIR with "
            "DIR/train/<class>/* and DIR/test/<class>/* images."
        )
    datamodule = instantiate(cfg.dataset, data_config=backbone.data_config, _convert_="all")
    datamodule.setup("fit")
    return datamodule


def _maybe_cache_features(cfg, strategy, module, datamodule, record) -> pl.LightningDataModule:
    cache = getattr(strategy, "cache_features", None)
    if not hasattr(strategy, "cache_features"):
        return datamodule
    augment_on = datamodule.augment.active
    if cache is None:
        cache = not augment_on
    elif cache and augment_on:
        log.warning(
            "strategy.cache_features=true: training augmentation is ignored (features are cached once)."
        )
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


def _build_loggers(cfg: DictConfig, out: Path, resuming: bool = False) -> list[Any]:
    loggers = []
    for key, conf in (cfg.get("logger") or {}).items():
        if not conf or "_target_" not in conf:
            continue
        if key == "wandb":
            conf = OmegaConf.create(
                OmegaConf.to_container(conf, resolve=True)
            )  # not struct: keys may be added
            conf = OmegaConf.merge(conf, _wandb_names(cfg, conf))
            id_file = out / WANDB_ID_FILE
            if resuming and id_file.is_file():  # the resumed run continues the same W&B run
                conf = OmegaConf.merge(conf, {"id": id_file.read_text().strip(), "resume": "allow"})
        loggers.append(instantiate(conf, _convert_="all"))
    return loggers


def _remember_wandb_id(trainer: pl.Trainer, out: Path, record: dict[str, Any]) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.WandbLogger) and trainer.is_global_zero:
            run = logger.experiment
            record.update(wandb_id=run.id, wandb_group=run.group, wandb_project=run.project)
            (out / WANDB_ID_FILE).write_text(run.id)


def _finished_record(cfg: DictConfig, out: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """With resume=true, a job whose results.json says ok is not run again (sweep resume), unless only
    trainer settings changed (e.g. more epochs): then it continues from its last checkpoint."""
    path = out / RESULTS_FILE
    if not cfg.get("resume") or not path.is_file():
        return None
    previous = read_results(path)
    before, now = _job_overrides(previous.get("overrides", [])), _job_overrides(record["overrides"])
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


def _job_overrides(overrides: list[str]) -> list[str]:
    skip = ("resume=", "hydra.", "trainer.enable_progress_bar")
    return sorted(o.lstrip("+~") for o in overrides if not o.lstrip("+~").startswith(skip))


def _set_csv_aside(out: Path, ckpt_path: str) -> tuple[Path, int] | None:
    """Lightning's CSVLogger deletes an existing metrics.csv: keep it to merge after the resumed run."""
    metrics = out / "csv" / "metrics.csv"
    if not metrics.is_file():
        return None
    aside = metrics.with_name("metrics.before_resume.csv")
    os.replace(metrics, aside)
    epoch = int(torch.load(ckpt_path, map_location="cpu", weights_only=False).get("epoch", -1))
    return aside, epoch


def _merge_csv(out: Path, aside: Path, epoch: int) -> None:
    """Rows of the epochs the checkpoint completed, then the resumed run's rows: one continuous log."""
    import pandas as pd

    metrics = out / "csv" / "metrics.csv"
    old = pd.read_csv(aside)
    old = old[old["epoch"] <= epoch]
    merged = pd.concat([old, pd.read_csv(metrics)], ignore_index=True) if metrics.is_file() else old
    tmp = metrics.with_suffix(".csv.tmp")
    merged.to_csv(tmp, index=False)
    os.replace(tmp, metrics)
    aside.unlink()


def _wandb_names(cfg: DictConfig, conf: DictConfig) -> dict[str, Any]:
    """Run name from the overrides; in a sweep, the group names the sweep (experiment/sweep time)."""
    names: dict[str, Any] = {}
    if not conf.get("name"):
        names["name"] = _run_name(cfg)
    if is_multirun() and conf.get("group") == cfg.experiment_name:
        names["group"] = f"{cfg.experiment_name}/{Path(HydraConfig.get().sweep.dir).name}"
    return names


def _run_name(cfg: DictConfig) -> str:
    overrides = [o for o in _overrides() if not o.startswith(("paths.", "hydra.", "logger."))]
    return ",".join(overrides) or f"{cfg.strategy.name}-{cfg.backbone.name}-s{cfg.seed}"


def _build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    if cfg.trainer.get("enable_progress_bar") is False:  # trainer.enable_progress_bar=false wins
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    return callbacks


def _log_config(trainer: pl.Trainer, cfg: DictConfig) -> None:
    resolved = _resolved(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)


def _resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    if not cfg.get("resume"):
        return None
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("Resuming from %s", last)
        return str(last)
    log.warning("resume=true but %s does not exist: starting from the beginning.", last)
    return None


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
    }


def _finish_wandb(trainer: pl.Trainer | None) -> None:
    """Close the W&B run of this job so the next multirun job starts its own."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=0)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    record = train(cfg)
    if record["status"] != "ok" and not is_multirun():
        print(f"error: {record['error']}", file=sys.stderr)
        sys.exit(1)
    return record["metrics"].get("test/acc")


def main() -> None:
    """Console script `transferlab-train`."""
    _hydra_main()


if __name__ == "__main__":
    main()
