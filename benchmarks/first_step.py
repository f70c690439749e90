"""A callback for `benchmarks.startup`: writes the wall-clock time of the first training step to a file."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class FirstStepMark(pl.Callback):
    """`+callbacks.first_step._target_=benchmarks.first_step.FirstStepMark +callbacks.first_step.path=FILE`"""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.path.exists():
            self.path.write_text(repr(time.time()))
