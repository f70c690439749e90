"""The trained backbone as a plain model for export, checked to compute what was trained."""

from __future__ import annotations

import torch
from torch import nn

from transferlab.backbones import Backbone
from transferlab.core.errors import TransferlabError

RTOL = 1e-4  # allowed: max |difference| <= RTOL * (1 + max |trained feature|)


def probe_batch(backbone: Backbone, n: int = 4) -> torch.Tensor:
    """A fixed random batch of `n` images at the backbone's image size, on its device."""
    device = next(backbone.parameters()).device
    shape = (n, backbone.in_chans, backbone.image_size, backbone.image_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)


@torch.no_grad()
def features_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`model`'s output for `x` in eval mode, in float32; the model's train/eval modes are restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return model(x).float()
    finally:
        for m, mode in modes.items():
            m.training = mode


def mismatch(trained: torch.Tensor, exported: torch.Tensor) -> tuple[float, float]:
    """(max |difference|, what is allowed) between two feature batches."""
    allowed = RTOL * (1 + float(trained.abs().max()))
    if trained.shape != exported.shape:
        return float("inf"), allowed
    return float((trained - exported).abs().max()), allowed


def verify_export(strategy_name: str, backbone: Backbone, exported: nn.Module) -> nn.Module:
    """`exported`, refused unless its features on a fixed random batch equal the trained backbone's
    within RTOL * (1 + max |feature|)."""
    x = probe_batch(backbone)
    diff, allowed = mismatch(features_of(backbone.model, x), features_of(exported, x))
    if not diff <= allowed:
        raise TransferlabError(
            f"The exported backbone of strategy={strategy_name} does not reproduce the trained network: max "
            f"|feature difference| {diff:.3g} on a batch of {len(x)} (allowed {allowed:.3g}); nothing was exported. "
            "Please report it with backbone.name and the strategy settings."
        )
    return exported
