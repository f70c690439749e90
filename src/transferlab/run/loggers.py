"""Loggers of a run: instantiation, W&B names, groups and ids, the resolved config, closing W&B."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from transferlab.core.errors import instantiate
from transferlab.run.runtime import is_multirun, overrides, resolved_config

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
        loggers.append(
            instantiate(
                conf, _convert_="all", kind=pl.loggers.Logger, example="pytorch_lightning.loggers.CSVLogger"
            )
        )
    return loggers


def remember_wandb_id(trainer: pl.Trainer, out: Path, record: dict[str, Any]) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.WandbLogger) and trainer.is_global_zero:
            run = logger.experiment
            record.update(wandb_id=run.id, wandb_group=run.group, wandb_project=run.project)
            (out / WANDB_ID_FILE).write_text(run.id)


def wandb_names(cfg: DictConfig, conf: DictConfig) -> dict[str, Any]:
    """Run name from the overrides; in a sweep, the group names the sweep (experiment/sweep time)."""
    names: dict[str, Any] = {"tags": sorted({*(conf.get("tags") or []), str(cfg.strategy.name)})}
    if not conf.get("name"):
        names["name"] = run_name(cfg)
    if is_multirun() and conf.get("group") == cfg.experiment_name:
        names["group"] = f"{cfg.experiment_name}/{Path(HydraConfig.get().sweep.dir).name}"
    return names


def run_name(cfg: DictConfig) -> str:
    chosen = [o for o in overrides() if not o.startswith(("paths.", "hydra.", "logger."))]
    return ",".join(chosen) or f"{cfg.strategy.name}-{cfg.backbone.name}-s{cfg.seed}"


SUMMARY_FIELDS = (
    "status",
    "strategy",
    "backbone",
    "dataset",
    "seed",
    "trainable_params",
    "total_params",
    "train_seconds",
    "peak_memory_mb",
    "weights_sha256",
    "test_samples",
)


def report_run(trainer: pl.Trainer, record: dict[str, Any], out: Path) -> None:
    """What the loggers show once the run is over: W&B gets its cost, hashes and final metrics in the
    run summary, per-class accuracy and the confusion matrix as tables, and the exported backbone as
    an artifact (offline too); TensorBoard gets the final metrics in its hparams view."""
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.WandbLogger):
            _report_wandb(logger.experiment, record, out)
        elif isinstance(logger, pl.loggers.TensorBoardLogger):
            final = {k: v for k, v in record.get("metrics", {}).items() if isinstance(v, float)}
            if record.get("objective", {}).get("value") is not None:
                final[f"objective/{record['objective']['name']}"] = record["objective"]["value"]
            logger.log_hyperparams(_flat(record.get("config") or {}), metrics=final)
            logger.save()


def _report_wandb(run: Any, record: dict[str, Any], out: Path) -> None:
    import wandb

    summary = {f"run/{k}": record.get(k) for k in SUMMARY_FIELDS if record.get(k) is not None}
    summary.update(
        {f"data/{k}_sha256": v for k, v in ((record.get("data") or {}).get("split_sha256") or {}).items()}
    )
    summary.update({f"final/{k}": v for k, v in (record.get("metrics") or {}).items()})
    if (record.get("objective") or {}).get("value") is not None:
        summary["objective"] = record["objective"]["value"]
    run.summary.update(summary)
    confusion = record.get("confusion_matrix")
    names = record.get("class_names") or []
    if confusion and names:
        per_class = [
            [name, row[i] / max(sum(row), 1), sum(row)]
            for i, (name, row) in enumerate(zip(names, confusion, strict=True))
        ]
        run.log(
            {
                "test/per_class_accuracy": wandb.Table(
                    columns=["class", "accuracy", "samples"], data=per_class
                ),
                "test/confusion_matrix": wandb.Table(
                    columns=["true", *names],
                    data=[[n, *row] for n, row in zip(names, confusion, strict=True)],
                ),
            }
        )
    export = record.get("export") or {}
    if export.get("sha256"):
        artifact = wandb.Artifact(
            f"backbone-{run.id}",
            type="model",
            metadata={k: export.get(k) for k in ("architecture", "sha256", "source_dataset")},
        )
        for name in ("backbone.safetensors", "backbone.json", "head.safetensors"):
            if (out / name).is_file():
                artifact.add_file(str(out / name))
        run.log_artifact(artifact)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


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
