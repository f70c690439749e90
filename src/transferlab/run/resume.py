"""How a run starts in its directory: fresh, resumed from its last checkpoint, started from a given
checkpoint (`ckpt_path`), or skipped because it already finished (sweep resume). Every refusal names
what is wrong and the fix."""

from __future__ import annotations

import logging
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from transferlab.core.config import RUN_FILES, refuse_changed_resume
from transferlab.core.errors import TransferlabError
from transferlab.run.results import RESULTS_FILE, read_results
from transferlab.run.runtime import is_rank_zero

log = logging.getLogger(__name__)
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass
class StartPlan:
    """What `train` does in its directory."""

    checkpoint: str | None = None  # continue from this checkpoint
    finished: dict[str, Any] | None = None  # already done: return this record, run nothing
    attempts: list[dict[str, Any]] = field(default_factory=list)  # earlier attempts in this directory


def plan_start(cfg: DictConfig, out: Path, config: dict[str, Any]) -> StartPlan:
    """Decide how the run starts in `out`; raise `TransferlabError` when it must not."""
    previous = _previous(out)
    attempts = [*previous.get("attempts", []), _attempt(previous)] if previous else []
    if cfg.get("ckpt_path") and cfg.get("resume"):
        raise TransferlabError(
            "resume=true and ckpt_path are both set; resume=true continues this directory's own last "
            "checkpoint, ckpt_path starts a new run from another one: use one of them."
        )
    if not cfg.get("resume"):
        checkpoint = _checkpoint_file(cfg.ckpt_path) if cfg.get("ckpt_path") else None
        if checkpoint is not None:
            checked_checkpoint(cfg, checkpoint, "ckpt_path")
        # DDP: ranks Lightning starts later find rank 0's files; only rank 0 decides about them
        held = [name for name in RUN_FILES if (out / name).exists()] if is_rank_zero() else []
        if held and not cfg.get("overwrite"):
            raise TransferlabError(
                f"{out} already holds a run ({', '.join(held)}); continue it with resume=true, write elsewhere "
                "(another hydra.run.dir), or pass overwrite=true to move the old files aside (never deleted)."
            )
        if held:
            aside = move_aside(out, held)
            log.warning("overwrite=true: the earlier run's files were moved to %s.", aside)
        return StartPlan(checkpoint=str(checkpoint) if checkpoint else None)
    if previous:
        refuse_changed_resume(previous.get("config") or {}, config, out)
    last = out / LAST_CHECKPOINT
    if previous and previous.get("status") == "ok" and _same_length(previous.get("config") or {}, config):
        log.info("Skipping %s: already finished (status ok). Remove results.json to run it again.", out)
        return StartPlan(finished=previous)
    if not last.is_file():
        if previous or (out / "checkpoints").is_dir():
            log.warning(
                "resume=true, but %s has no checkpoint yet (the run stopped before its first one): "
                "starting this run over from the beginning.",
                out,
            )
        return StartPlan(attempts=attempts)
    log.info("Resuming from %s", last)
    return StartPlan(checkpoint=str(checked_checkpoint(cfg, last, "resume=true")), attempts=attempts)


def move_aside(out: Path, names: list[str]) -> Path:
    """Move an earlier run's files into `<out>/.replaced-<time>/` (hidden from reports, never deleted)."""
    aside = out / f".replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.mkdir(parents=True)
    for name in names:
        os.replace(out / name, aside / name)
    return aside


def _previous(out: Path) -> dict[str, Any] | None:
    path = out / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return read_results(path)
    except ValueError:  # written atomically, so only a foreign or hand-edited file can be broken
        raise TransferlabError(
            f"{path} is not a readable transferlab record; move it away or use another directory."
        ) from None


def _attempt(record: dict[str, Any]) -> dict[str, Any]:
    """What an earlier attempt left in results.json (kept when the run is tried again)."""
    status = record.get("status")
    if status == "running":  # it never wrote its end: the process was killed
        status = "killed"
    return {
        "status": status,
        "error": record.get("error"),
        "started_at": record.get("started_at"),
        "pid": record.get("pid"),
    }


def _same_length(before: dict[str, Any], now: dict[str, Any]) -> bool:
    trainer_before, trainer_now = before.get("trainer") or {}, now.get("trainer") or {}
    return all(trainer_before.get(k) == trainer_now.get(k) for k in ("max_epochs", "max_steps"))


def _checkpoint_file(spec: str | os.PathLike) -> Path:
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        if (path / LAST_CHECKPOINT).is_file():
            return path / LAST_CHECKPOINT
        raise TransferlabError(
            f"ckpt_path={spec} is a directory without {LAST_CHECKPOINT}; give a .ckpt file or a run directory "
            "that has written a checkpoint."
        )
    if not path.is_file():
        raise TransferlabError(
            f"ckpt_path={spec}: no such file or directory; give a .ckpt file or a run directory."
        )
    return path


def inspect_checkpoint(path: Path, given_as: str) -> dict[str, Any]:
    """The checkpoint's metadata, read without loading its tensors (memory-mapped); a truncated or corrupt
    file is a clear error."""
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a PyTorch zip archive")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # the file itself is bad; never advise weights_only=False
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.split(" Please file an issue")[0].split("In PyTorch 2.6")[0].strip()
        raise TransferlabError(
            f"{given_as}: checkpoint {path} is unreadable (truncated or corrupt: {reason[:160]}). Delete it to "
            "start over, or give ckpt_path an earlier checkpoint (checkpoints/epoch*.ckpt)."
        ) from None
    return {
        "epoch": int(checkpoint.get("epoch", 0)),
        "global_step": int(checkpoint.get("global_step", 0)),
        "transferlab": checkpoint.get("transferlab") or {},
    }


def checked_checkpoint(cfg: DictConfig, path: Path, given_as: str) -> Path:
    """`path`, once it is known to be readable and to fit this run's backbone, strategy and length."""
    info = inspect_checkpoint(path, given_as)
    meta = info["transferlab"]
    backbone = (meta.get("backbone") or {}).get("name")
    if backbone and backbone != cfg.backbone.name:
        raise TransferlabError(
            f"{given_as}: checkpoint {path} was trained with backbone {backbone}, this run uses "
            f"{cfg.backbone.name}; set backbone.name={backbone} or start from another checkpoint."
        )
    strategy = (meta.get("strategy") or {}).get("name")
    if strategy and strategy != cfg.strategy.name:
        raise TransferlabError(
            f"{given_as}: checkpoint {path} was trained with strategy {strategy}, this run uses "
            f"{cfg.strategy.name}; set strategy={strategy} or start from another checkpoint."
        )
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs != -1 and info["epoch"] >= int(max_epochs):
        done = info["epoch"]
        raise TransferlabError(
            f"{given_as}: the checkpoint has already trained {done} epoch(s) but trainer.max_epochs={max_epochs}; "
            f"raise trainer.max_epochs above {done} to train further."
        )
    return path


def saved_best_score(path: str | os.PathLike) -> float | None:
    """The monitored score a top-k checkpoint recorded about itself (its ModelCheckpoint state)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and state.get("best_model_path") == str(path):
            score = state.get("best_model_score")
            return None if score is None else float(score)
    return None
