"""Helpers shared by the benchmarks: compose the real config, time a run, print JSON."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict


def compose_run(out_dir: Path, overrides: list[str]) -> DictConfig:
    """The config the CLI would build for `overrides`, writing into `out_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="transferlab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        del cfg["hydra"]
    return cfg


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
    os.environ.setdefault("TRANSFERLAB_CACHE", str(path / "cache"))
    return path


def emit(result: dict) -> None:
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
