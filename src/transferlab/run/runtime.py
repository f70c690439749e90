"""Where a job runs: its Hydra mode, its rank, its command-line overrides."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from transferlab.run.results import redact


def is_rank_zero() -> bool:
    """Rank 0 of a distributed run (Lightning's own reading of RANK, LOCAL_RANK, SLURM_PROCID, ...)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def overrides() -> list[str]:
    """The job's command-line overrides (secrets redacted: reading them resolves interpolations)."""
    return redact(list(HydraConfig.get().overrides.task)) if HydraConfig.initialized() else []


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config with secrets (API keys, tokens from the environment) replaced by '***'."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only resolves inside a Hydra run
        data = OmegaConf.to_container(cfg, resolve=False)
    return redact(data)
