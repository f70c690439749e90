"""The per-run record (`results.json`), what it says about the environment, and its atomic writer."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from transferlab.core.atomic import atomic_open
from transferlab.core.config import redact
from transferlab.core.names import RESULTS_FILE  # noqa: F401 - the run layer's modules import it from here

PACKAGES = (
    "transferlab",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "hydra-core",
    "omegaconf",
    "timm",
    "torchmetrics",
    "wandb",
    "scikit-learn",
    "numpy",
    "pandas",
    "peft",
    "safetensors",
)


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages a run depends on."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Revision and dirty flag of the git checkout at `path` (the launch directory by default)."""
    cwd = str(path or os.getcwd())
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return {"revision": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"revision": rev.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def peak_memory_mb() -> float:
    """Peak GPU memory allocated when CUDA was used, else the process's peak resident memory."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON through a temporary file in the same folder and a rename: never half-written."""
    with atomic_open(path, "w") as f:
        json.dump(redact(data), f, indent=2, default=str)
        f.write("\n")


RESERVE = ".reserve"  # a few blocks kept free for the final record, given back just before it is written
RESERVE_BYTES = 256 * 1024


def reserve_space(out: Path) -> None:
    """Hold `RESERVE_BYTES` in `out`, so a disk that fills during the run still has room for results.json."""
    try:
        with open(out / RESERVE, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        (out / RESERVE).unlink(missing_ok=True)


def release_space(out: Path) -> None:
    (Path(out) / RESERVE).unlink(missing_ok=True)


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
