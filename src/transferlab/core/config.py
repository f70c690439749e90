"""Composing `train.yaml` outside the command line: tests, benchmarks, tools, source pretraining."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

# A config group's hyperparameters for tuning: read by the sweeper, never instantiated.
SEARCH_SPACE_KEY = "search_space"


@contextlib.contextmanager
def _config_module() -> Iterator[None]:
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: reuse its search path
        yield
        return
    with initialize_config_module(config_module="transferlab.conf", version_base="1.3"):
        yield


def compose_train(overrides: Sequence[str] = (), output_dir: str | os.PathLike | None = None) -> DictConfig:
    """The config that `python -m transferlab.train OVERRIDES` would run.

    With `output_dir` (outside a Hydra app), the result goes straight to `transferlab.train.train`:
    Hydra's runtime config is registered so `${hydra:...}` resolves, and outputs land in `output_dir`.
    """
    with _config_module():
        cfg = compose(
            config_name="train", overrides=list(overrides), return_hydra_config=output_dir is not None
        )
    if output_dir is not None:
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            del cfg["hydra"]
    return cfg


def without_search_space(node: DictConfig) -> DictConfig:
    """A copy of a config node without its `search_space` (what `instantiate` should see)."""
    if SEARCH_SPACE_KEY not in node:
        return node
    data = OmegaConf.to_container(node, resolve=True)
    data.pop(SEARCH_SPACE_KEY)
    return OmegaConf.create(data)
