"""Helpers shared by the benchmarks: compose the real config, time a run, print JSON."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from transferlab.config import compose_train


def compose_run(out_dir: Path, overrides: list[str]) -> DictConfig:
    """The config the CLI would build for `overrides`, writing into `out_dir`."""
    return compose_train(overrides, output_dir=out_dir)


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
