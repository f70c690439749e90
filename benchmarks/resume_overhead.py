"""What resuming costs: time from `train()` to the first training step for a resumed run against a fresh
one, and the time to write a checkpoint, per epoch.

Fresh and resumed runs alternate (fresh, resumed, fresh, ...) after a warm-up, `--repeats` times; the
JSON gives medians with min and max, and the ratio resumed / fresh (medians, measured in this run).

    python -m benchmarks.resume_overhead [--backbone resnet18] [--image-size 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import pytorch_lightning as pl

from benchmarks.common import compose_run, emit, workdir
from transferlab.run import checkpoint
from transferlab.run.job import train

STARTED: dict[str, float] = {}


class FirstStepTimer(pl.Callback):
    """Records when the first training batch starts (relative to `STARTED['t']`)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        STARTED.setdefault("first_step", time.perf_counter() - STARTED["t"])


def timed_checkpoint_writes() -> list[float]:
    """Wrap the atomic checkpoint writer to collect each write's seconds."""
    writes: list[float] = []
    original = checkpoint.AtomicCheckpointIO.save_checkpoint

    def save(self, *args, **kwargs):
        start = time.perf_counter()
        original(self, *args, **kwargs)
        writes.append(time.perf_counter() - start)

    checkpoint.AtomicCheckpointIO.save_checkpoint = save
    return writes


def to_first_step(out, overrides: list[str]) -> float:
    STARTED.clear()
    STARTED["t"] = time.perf_counter()
    record = train(compose_run(out, overrides))
    assert record["status"] == "ok", record["error"]
    return STARTED["first_step"]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    root = workdir()
    base = [
        f"backbone={args.backbone}",
        f"dataset.image_size={args.image_size}",
        "dataset.classes=[0,1,2,3,4]",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        "+callbacks.first_step._target_=benchmarks.resume_overhead.FirstStepTimer",
    ]
    writes = timed_checkpoint_writes()
    finished = root / "finished"
    to_first_step(finished, base)  # warm-up, and the run every resume continues
    epochs_written = len(writes)
    fresh, resumed = [], []
    for i in range(args.repeats):
        fresh.append(to_first_step(root / f"fresh{i}", base))
        copy = root / f"resumed{i}"
        shutil.copytree(finished, copy)
        resumed.append(to_first_step(copy, [*base, f"trainer.max_epochs={args.epochs + 1}", "resume=true"]))
    emit(
        {
            "backbone": args.backbone,
            "image_size": args.image_size,
            "repeats": args.repeats,
            "fresh_seconds_to_first_step": summary(fresh),
            "resumed_seconds_to_first_step": summary(resumed),
            "ratio_resumed_over_fresh": statistics.median(resumed) / statistics.median(fresh),
            "checkpoint_write_seconds": summary(writes[:epochs_written]),
            "checkpoint_writes_per_epoch": epochs_written / args.epochs,
            "checkpoint_seconds_per_epoch": sum(writes[:epochs_written]) / args.epochs,
        }
    )


if __name__ == "__main__":
    # The timer callback is instantiated by name from `benchmarks.resume_overhead`: run that copy.
    from benchmarks.resume_overhead import main as imported_main

    imported_main()
