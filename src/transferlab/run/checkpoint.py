"""Checkpoints that survive being killed: atomic writes, RNG states, a checkpoint on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from transferlab.core.atomic import atomic_open
from transferlab.core.errors import TransferlabError
from transferlab.core.faults import crash_point
from transferlab.core.locks import DirectoryLock

log = logging.getLogger(__name__)
INTERRUPT_CHECKPOINT = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into a temporary file beside the target, fsync, then rename: never a half-written file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        with atomic_open(path) as f:
            torch.save(checkpoint, f)
        crash_point("checkpoint")


class RunLock(DirectoryLock):
    """One live run per directory (`transferlab.core.locks`), held for the whole run."""

    def __init__(self, directory: str | Path):
        super().__init__(
            directory,
            "run",
            "wait for it to finish, or give this run its own directory (a new hydra.run.dir)",
        )


class StepCheckpoint(pl.callbacks.ModelCheckpoint):
    """`last.ckpt` every `every_n_train_steps` optimizer steps (not on an epoch's last batch: the epoch's
    own checkpoint follows once its validation and metrics are done)."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            super().on_train_batch_end(trainer, *args, **kwargs)


def step_checkpoint(dirpath: str | Path, every_n_train_steps: int) -> StepCheckpoint:
    """`last.ckpt` every `every_n_train_steps` optimizer steps, beside the per-epoch checkpoints: a run
    killed mid-epoch loses at most that many steps and resumes exactly where the checkpoint was taken."""
    return StepCheckpoint(
        dirpath=dirpath,
        save_top_k=0,
        save_last=True,
        every_n_train_steps=every_n_train_steps,
        enable_version_counter=False,  # both callbacks write the one last.ckpt
    )


def last_checkpoint(dirpath: str | Path) -> pl.callbacks.ModelCheckpoint:
    """`last.ckpt` after every epoch's validation: the latest state, which a resume continues from.

    Lightning 2.6 writes `save_last` only when a top-k checkpoint was written at the same step, so with
    `save_top_k: 1` last.ckpt stays at the best epoch and a resume would train the later epochs again.
    A checkpoint without a monitor keeps the newest; named "last", it is that file.
    """
    return pl.callbacks.ModelCheckpoint(
        dirpath=dirpath,
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states, in types a weights-only load accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class InterruptCheckpoint(pl.Callback):
    """On SIGTERM (e.g. cluster pre-emption) or SIGINT: save `checkpoints/last.ckpt` and remember why."""

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)
        self.signal: str | None = None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            self.signal = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.signal = "SIGINT"
        else:
            return
        path = self.dirpath / INTERRUPT_CHECKPOINT
        trainer.save_checkpoint(path)
        log.warning(
            "Received %s: saved %s (epoch %d, step %d).",
            self.signal,
            path,
            trainer.current_epoch,
            trainer.global_step,
        )


def check_disk_space(
    directory: Path, module: torch.nn.Module, copies: int = 3, reserve_mb: float = 0.0
) -> None:
    """Fail before training when `directory` cannot hold the checkpoints (weights + optimizer state)."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    trainable = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    need = copies * (params + 2 * trainable) + reserve_mb * 2**20
    free = shutil.disk_usage(directory).free
    if free < need:
        raise TransferlabError(
            f"Only {free / 2**20:.0f} MiB free in {directory}, but checkpoints need about {need / 2**20:.0f} MiB "
            f"(including paths.disk_reserve_mb={reserve_mb:g}); free some space or point hydra.run.dir / "
            "paths.log_dir at a larger disk."
        )
