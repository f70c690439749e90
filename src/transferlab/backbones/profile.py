"""Each stage's share of a backbone's parameters and of its forward FLOPs (torch's FlopCounterMode)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transferlab.backbones.backbone import Backbone


def _owners(backbone: Backbone) -> dict[str, int]:
    """Module path -> index of the stage holding its parameters; -1 where stages share the path."""
    owner: dict[str, int] = {}
    for i, stage in enumerate(backbone.stages):
        for name in stage.param_names:
            parts = name.split(".")[:-1]
            for depth in range(len(parts), -1, -1):
                path = ".".join(parts[:depth])
                owner[path] = i if owner.get(path, i) == i else -1
    return owner


def _stage_of(path: str, owner: dict[str, int]) -> int:
    parts = path.split(".") if path else []
    for depth in range(len(parts), -1, -1):
        index = owner.get(".".join(parts[:depth]), -1)
        if index >= 0:
            return index
    return -1


def stage_flops(backbone: Backbone, image_size: int) -> tuple[list[int], int]:
    """(FLOPs of each stage, FLOPs of the whole forward) for one image of `image_size`, each module's
    own FLOPs (without its children's) counted for the stage holding its parameters."""
    from torch.utils.flop_counter import FlopCounterMode

    model: nn.Module = backbone.model
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter:  # not under no_grad: torch's module tracker then trips on some models (PiT)
            model(torch.zeros(1, backbone.in_chans, image_size, image_size))
    finally:
        model.train(was_training)
    inclusive = {}
    for key, ops in counter.get_flop_counts().items():
        if key != "Global":  # keys: RootClass.path.to.module
            inclusive[key.partition(".")[2]] = sum(ops.values())
    own = dict(inclusive)
    for path, flops in inclusive.items():
        if not path:
            continue
        parts = path.split(".")
        parent = next(
            (".".join(parts[:d]) for d in range(len(parts) - 1, -1, -1) if ".".join(parts[:d]) in inclusive),
            None,
        )
        if parent is not None:
            own[parent] -= flops
    owner = _owners(backbone)
    per_stage = [0] * len(backbone.stages)
    for path, flops in own.items():
        index = _stage_of(path, owner)
        if index >= 0:
            per_stage[index] += flops
    return per_stage, int(counter.get_total_flops())


def stage_shares(backbone: Backbone, image_size: int) -> list[dict[str, Any]]:
    """`describe_stages()` plus `param_share` and `flop_share` (fractions of the backbone's totals)."""
    stages = backbone.describe_stages()
    total_params = sum(p.numel() for p in backbone.parameters()) or 1
    flops, total_flops = stage_flops(backbone, image_size)
    for stage, f in zip(stages, flops, strict=True):
        stage["param_share"] = stage["params"] / total_params
        stage["flops"] = f
        stage["flop_share"] = f / total_flops if total_flops else 0.0
    return stages
