"""Strategies whose trainable set changes during training: gradual unfreezing and LP-FT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field

from transferlab.backbones import Backbone
from transferlab.core.errors import TransferlabError
from transferlab.strategies.simple import Full


class GradualUnfreeze(Full):
    """Head first, then one more stage (from the top) every `unfreeze_every` epochs, or at each of
    the explicit epoch `milestones`. All parameters are in the optimizer from step 0 and gated."""

    gated = True

    def __init__(
        self,
        unfreeze_every: Annotated[int, Field(ge=1)] = 1,
        milestones: Sequence[Annotated[int, Field(ge=0)]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.unfreeze_every = int(unfreeze_every)
        self.milestones = sorted(int(m) for m in milestones) if milestones else None

    def check(self, backbone: Backbone) -> None:
        super().check(backbone)
        if self.milestones is None and self.unfreeze_every < 1:
            raise TransferlabError(f"strategy.unfreeze_every={self.unfreeze_every} must be at least 1.")

    def unfrozen_count(self, epoch: int) -> int:
        if self.milestones is not None:
            return sum(1 for m in self.milestones if m <= epoch)
        return epoch // self.unfreeze_every

    def trainable_stages(self, n_stages: int, epoch: int) -> set[int]:
        k = min(self.unfrozen_count(epoch), n_stages)
        return set(range(n_stages - k, n_stages))


class LPFT(Full):
    """LP-FT: a linear-probe phase of `probe_epochs` (head only), then full fine-tuning that starts
    from the probed head. Gated like gradual unfreezing, so one optimizer serves both phases."""

    gated = True

    def __init__(self, probe_epochs: Annotated[int, Field(ge=0)] = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.probe_epochs = int(probe_epochs)

    def trainable_stages(self, n_stages: int, epoch: int) -> set[int]:
        return set() if epoch < self.probe_epochs else set(range(n_stages))
