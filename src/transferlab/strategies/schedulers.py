"""Learning-rate schedules, per optimizer step, sized by the steps the fit will take."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Linear warm-up over `warmup_fraction` of the steps, then cosine decay to `min_lr_ratio`."""

    def __init__(self, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0):
        self.warmup_fraction = float(warmup_fraction)
        self.min_lr_ratio = float(min_lr_ratio)
        self.resize(total_steps)

    def resize(self, total_steps: int) -> None:
        """Plan for `total_steps` (a resumed run with more epochs): the schedule that run would have had."""
        self.total_steps = max(1, int(total_steps))
        self.warmup = int(round(self.total_steps * self.warmup_fraction))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """A `LambdaLR` that scales every param group's own `lr` (so per-group multipliers are kept)."""
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_fraction, min_lr_ratio))
