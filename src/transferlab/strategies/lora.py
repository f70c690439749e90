"""LoRA: low-rank adapters (HF `peft`) on the backbone's Linear/Conv layers; merged on export."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import nn

from transferlab.backbones import Backbone
from transferlab.core.errors import TransferlabError, did_you_mean
from transferlab.strategies.base import TransferStrategy

ADAPTER_MARK = "lora_"


def _adaptable(model: nn.Module) -> list[str]:
    """Linear layers and ordinary (not grouped/depthwise) convolutions: what LoRA can adapt."""
    return [
        n
        for n, m in model.named_modules()
        if n and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))
    ]


class LoRA(TransferStrategy):
    """Only the adapters (rank `rank`, scale `alpha / rank`) and the head train.

    `target_modules`: module-name suffixes to adapt; default `qkv` for ViTs, else every Linear and
    ungrouped Conv2d layer (depthwise convolutions are left alone).
    """

    name = "lora"

    def __init__(
        self,
        target_modules: Sequence[str] | None = None,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.target_modules = list(target_modules) if target_modules else None
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.dropout = float(dropout)

    def resolve_targets(self, model: nn.Module) -> list[str]:
        names = _adaptable(model)
        if self.target_modules is None:
            qkv = [n for n in names if n.endswith("qkv")]
            return ["qkv"] if qkv else names
        for target in self.target_modules:
            if not any(n == target or n.endswith("." + target) for n in names):
                suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
                raise TransferlabError(
                    f"strategy.target_modules: '{target}' matches no Linear or ungrouped Conv2d layer of this backbone (LoRA cannot adapt depthwise convolutions)."
                    f"{did_you_mean(target, suffixes)} Layer names end with: {', '.join(suffixes[:12])}."
                )
        return self.target_modules

    def prepare(self, backbone: Backbone) -> None:
        from peft import LoraConfig, get_peft_model

        if self.rank < 1:
            raise TransferlabError(f"strategy.rank={self.rank} must be at least 1.")
        targets = self.resolve_targets(backbone.model)
        config = LoraConfig(
            target_modules=targets, r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, bias="none"
        )
        try:
            backbone.model = get_peft_model(backbone.model, config)
        except ValueError as exc:  # e.g. a grouped convolution whose groups do not divide the rank
            raise TransferlabError(
                f"strategy.target_modules={targets} cannot take LoRA adapters of rank {self.rank}: {exc} "
                "Target other layers (Linear or ungrouped Conv2d) or change strategy.rank."
            ) from None
        self.resolved_targets = targets

    def trainable_parameters(self, backbone: Backbone, epoch: int) -> set[int]:
        return {id(p) for n, p in backbone.named_parameters() if ADAPTER_MARK in n}

    def export_model(self, backbone: Backbone) -> nn.Module:
        """A copy of the backbone model with the adapters merged into the weights."""
        return copy.deepcopy(backbone.model).merge_and_unload()
