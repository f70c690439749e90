"""`RunContext`: what a strategy's run hooks see of the job (the config, the target data, the record)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig


@dataclass
class RunContext:
    """The composed config, the target task's data module (set up for fit) and the run's record, where a
    hook writes what it did (e.g. `feature_cache`, `prefix_cache`, `probe`)."""

    cfg: DictConfig
    datamodule: Any
    record: dict[str, Any]

    @property
    def device(self) -> str:
        """Where one-off computations (feature caches) run: the GPU when the trainer may use one."""
        accelerator = str(self.cfg.trainer.get("accelerator", "cpu"))
        return "cuda" if torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto") else "cpu"

    @property
    def feature_cache_dir(self) -> Path:
        return Path(self.cfg.paths.cache_dir).resolve() / "features"
