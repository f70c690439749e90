"""`Backbone`: a feature extractor with its feature size, ordered stages and data config."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transferlab.backbones.stages import Stage


class Backbone(nn.Module):
    """Wraps a model whose forward returns pooled features of size `num_features`.

    `stages` are ordered (stem first); `stage_parameters()` gives their parameter objects, which stay
    valid when a strategy later wraps the model (e.g. LoRA adapters). `stage_source` says where the
    stages came from (`group_matcher`, `feature_info`, `top-level children` or `declared`).
    """

    stage_source = "declared"
    in_chans = 3
    image_size = 224  # what it was built and checked for (create_backbone's image_size)

    def __init__(
        self,
        model: nn.Module,
        name: str,
        stages: list[Stage],
        num_features: int,
        data_config: dict[str, Any],
        kwargs: dict[str, Any] | None = None,
        weights: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.name = name
        self.stages = stages
        self.num_features = num_features
        self.data_config = data_config
        self.kwargs = dict(kwargs or {})
        self.weights = dict(weights or {"source": "random"})
        by_name = dict(model.named_parameters())
        self._stage_params = [[by_name[n] for n in s.param_names] for s in stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def stage_parameters(self) -> list[list[nn.Parameter]]:
        """Parameters of each stage, in stage order."""
        return self._stage_params

    def describe_stages(self) -> list[dict[str, Any]]:
        """Name, modules and parameter count of every stage."""
        return [
            {"index": i, "name": s.name, "modules": s.modules(), "params": sum(p.numel() for p in ps)}
            for i, (s, ps) in enumerate(zip(self.stages, self._stage_params, strict=True))
        ]
