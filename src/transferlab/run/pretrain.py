"""Source-task pretraining on demand, cached by config hash (`backbone.pretrained=source`).

A target config names its source with `source.experiment` (plus `source.overrides`); the source run is
composed with the target's backbone and image size, trained once into
`${paths.cache_dir}/pretrained/<experiment>-<hash>/`, and reused by every later run whose source config
hashes the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.backbones.weights import EXPORT_WEIGHTS
from transferlab.core.config import compose_train
from transferlab.core.errors import TransferlabError
from transferlab.core.faults import scope
from transferlab.run.results import RESULTS_FILE, read_results

log = logging.getLogger(__name__)
SOURCE = "source"
# Keys that do not change what a source run learns.
_NOT_HASHED = ("paths", "logger", "callbacks", "source", "resume", "experiment_name")
_TRAINER_NOT_HASHED = ("enable_progress_bar", "default_root_dir", "enable_model_summary", "log_every_n_steps")


def config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved config parts that determine the trained weights."""
    data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    data = {k: v for k, v in data.items() if k not in _NOT_HASHED}
    data["trainer"] = {k: v for k, v in data.get("trainer", {}).items() if k not in _TRAINER_NOT_HASHED}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def compose_source(cfg: DictConfig) -> DictConfig:
    """The source run's config: its experiment, with the target's backbone and image size."""
    source = cfg.source
    src = compose_train([f"experiment={source.experiment}", *list(source.get("overrides") or [])])
    with open_dict(src):
        src.backbone = OmegaConf.merge(cfg.backbone, {"pretrained": False})
        src.dataset.image_size = cfg.dataset.image_size
        src.paths = cfg.paths
        src.logger = {"csv": cfg.logger.csv} if "csv" in (cfg.get("logger") or {}) else {}
        src.callbacks = cfg.callbacks
        src.trainer.enable_progress_bar = cfg.trainer.get("enable_progress_bar", True)
        src.source = None
    return src


def ensure_source(cfg: DictConfig, run: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """Run (or reuse, with `run` = the job function) the source pretraining of `cfg`; returns where its export
    is and whether it was reused."""
    if not cfg.get("source") or not cfg.source.get("experiment"):
        raise TransferlabError(
            "backbone.pretrained=source needs source.experiment (e.g. source.experiment=digits_source); "
            "or give backbone.pretrained a weights file or run directory."
        )
    src = compose_source(cfg)
    digest = config_hash(src)
    run_dir = (Path(cfg.paths.cache_dir) / "pretrained" / f"{cfg.source.experiment}-{digest[:12]}").resolve()
    info = {"experiment": cfg.source.experiment, "config_hash": digest, "run_dir": str(run_dir)}
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir.parent / f".{run_dir.name}.lock"):  # parallel sweep jobs pretrain once
        results = run_dir / RESULTS_FILE
        if (
            (run_dir / EXPORT_WEIGHTS).is_file()
            and results.is_file()
            and read_results(results)["status"] == "ok"
        ):
            log.info(
                "Reusing source pretraining %s (config hash %s): %s",
                cfg.source.experiment,
                digest[:12],
                run_dir,
            )
            return {**info, "reused": True, "metrics": read_results(results)["metrics"]}
        log.info(
            "Pretraining on source task %s (config hash %s) -> %s",
            cfg.source.experiment,
            digest[:12],
            run_dir,
        )
        with open_dict(src):
            src.paths.output_dir = str(run_dir)
            src.resume = True  # a source pretraining killed earlier continues from its checkpoint
        with scope("source:"):
            record = run(src)
    if record["status"] != "ok":
        raise TransferlabError(
            f"Source pretraining {cfg.source.experiment} failed: {record['error']} (see {run_dir})."
        )
    return {**info, "reused": False, "metrics": record["metrics"]}
