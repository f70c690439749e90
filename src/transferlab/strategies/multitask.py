"""Hard parameter sharing: one backbone trained jointly on the source and the target task."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from transferlab.core.errors import TransferlabError
from transferlab.strategies.simple import Full

SCHEDULES = ("constant", "linear", "cosine")
MODES = ("max_size_cycle", "min_size")


class MultiTask(Full):
    """Shared backbone, one head per task, trained on both at once (Caruana 1997; Ruder 2017 "hard
    parameter sharing"). Each step draws a target batch and a source batch (Lightning's `CombinedLoader`,
    `mode`); the loss is

        L = L_target + lambda(t) * L_source,   lambda(t) = source_weight * s(t)

    with s = 1 (`constant`), 1 - t (`linear`) or (1 + cos(pi t)) / 2 (`cosine`) over training progress t in
    [0, 1]. The target head is tested and exported; the source head is scored on the source test split."""

    def __init__(
        self,
        source_weight: Annotated[float, Field(ge=0.0)] = 1.0,
        source_weight_schedule: Literal[SCHEDULES] = "constant",
        mode: Literal[MODES] = "max_size_cycle",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.source_weight = float(source_weight)
        self.source_weight_schedule = str(source_weight_schedule)
        self.mode = str(mode)
        if self.source_weight_schedule not in SCHEDULES:
            raise TransferlabError(
                f"strategy.source_weight_schedule={self.source_weight_schedule} is not one of {', '.join(SCHEDULES)}."
            )
        if self.mode not in MODES:
            raise TransferlabError(
                f"strategy.mode={self.mode} is not one of {', '.join(MODES)} (CombinedLoader modes)."
            )
        if self.source_weight < 0:
            raise TransferlabError(f"strategy.source_weight={self.source_weight} must be 0 or more.")

    def source_weight_at(self, progress: float) -> float:
        """lambda at training progress `progress` (0 = first step, 1 = last)."""
        t = min(max(progress, 0.0), 1.0)
        factor = {"constant": 1.0, "linear": 1.0 - t, "cosine": 0.5 * (1.0 + math.cos(math.pi * t))}
        return self.source_weight * factor[self.source_weight_schedule]

    # ---------------------------------------------------------------- run hooks
    _source = None  # the source task's data module, built with the module

    def build_module(self, ctx: Any, backbone: Any, **kwargs: Any) -> Any:
        """A `MultiTaskModule` (a head per task) and, beside it, the source task's data (`source.*`)."""
        from transferlab.strategies.joint import MultiTaskModule, build_source_datamodule

        self._source = build_source_datamodule(ctx.cfg, backbone, ctx.datamodule)
        return MultiTaskModule(backbone, self, source_classes=self._source.num_classes, **kwargs)

    def prepare_data(self, ctx: Any, module: Any) -> Any:
        """Training batches of both tasks at once; validation and test are the target's."""
        from transferlab.strategies.joint import JointDataModule

        return JointDataModule(ctx.datamodule, self._source, self.mode)

    def extra_metrics(self, module: Any) -> dict[str, float]:
        """`source/acc`: the shared backbone's source head on the source test split."""
        from transferlab.evaluation.scoring import accuracy

        loader = self._source.eval_dataloader("test")
        return {"source/acc": accuracy(module.backbone, module.source_head, loader, self._source.num_classes)}
