"""Where a job runs: its Hydra mode, its rank, its command-line overrides, where its log lines go."""

from __future__ import annotations

import logging
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


LIGHTNING_LOGGERS = ("lightning_fabric", "pytorch_lightning", "lightning")


def lightning_logs_to_the_job() -> None:
    """Lightning's log lines (seed, devices, checkpoint restores, why a fit stopped) go where the job's
    do: `train.log` and the console. Imported before Hydra sets up logging (the pre-flight locates
    classes that import it), Lightning gives its loggers a console handler of their own and stops them
    propagating, so `train.log` would miss them."""
    if not logging.getLogger().handlers:  # no job logging (a library call): leave Lightning's own
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.propagate:
            for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                logger.removeHandler(handler)
            logger.propagate = True
