"""LoRA: low-rank adapters (HF `peft`) on the backbone's Linear/Conv layers; merged on export.

peft's adapters add B A x to the layer's output, which equals merging B A into the weight only for
layers linear in their weight. A weight-standardized convolution (timm `StdConv2d`, `ScaledStdConv2d`:
BiT, NFNet, ResNetV2) standardizes the merged weight again, so there the adapter is put on the weight
itself (`WeightLoRA`, W + B A before the layer's own transform). Each layer type is probed once.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Sequence
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from transferlab.backbones import Backbone
from transferlab.core.errors import TransferlabError, did_you_mean
from transferlab.strategies.base import TransferStrategy

log = logging.getLogger(__name__)

ADAPTER_MARK = "lora_"


def _adaptable(model: nn.Module) -> list[str]:
    """Linear layers and ordinary (not grouped/depthwise) convolutions: what LoRA can adapt."""
    return [
        n
        for n, m in model.named_modules()
        if n and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))
    ]


class WeightLoRA(nn.Module):
    """LoRA as its definition reads, W' = W + (alpha / r) B A, applied to the weight itself (a
    parametrization): exact to merge for any layer, also one that standardizes its weight (timm
    `StdConv2d`, `ScaledStdConv2d`). B starts at zero, A as peft initializes it."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, weight[0].numel(), device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(weight.shape[0], rank, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.lora_B @ self.lora_A).view_as(weight).to(weight.dtype) * self.scale


def _merge_peft(model: nn.Module) -> nn.Module:
    """Merge every peft LoRA layer into its base layer and put the base layer back. peft's own
    `merge_and_unload` also takes any module with a `base_layer` child for one of its layers (timm's
    DLA names its stem `base_layer`) and fails on it."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model


def _merge_weight(layer: nn.Module) -> None:
    """Fold a `WeightLoRA` into a plain weight in this (copied) layer only. torch's
    `remove_parametrizations` would delete the property from the parametrized class, which a deepcopy
    shares with the trained layer."""
    weight = layer.weight.detach().clone()
    del layer._modules["parametrizations"]
    layer.__class__ = layer.__class__.__bases__[0]  # the class before parametrization
    layer.weight = nn.Parameter(weight)


def _signature(layer: nn.Module) -> tuple:
    keys = ("kernel_size", "stride", "padding", "dilation", "padding_mode", "in_features", "in_channels")
    return (type(layer), *(str(getattr(layer, k, None)) for k in keys))


def merge_is_exact(layer: nn.Module) -> bool:
    """Whether peft's adapted layer works and its merge computes what it does (probed on a copy with
    random adapters); torch's own Linear and zero-padded, undilated Conv2d are exact by construction
    (peft's adapter convolution ignores dilation)."""
    plain_conv = (
        type(layer) is nn.Conv2d and layer.padding_mode == "zeros" and tuple(layer.dilation) == (1, 1)
    )
    if type(layer) is nn.Linear or plain_conv:
        return True
    from peft import LoraConfig, get_peft_model

    probe = nn.Sequential(copy.deepcopy(layer)).float().cpu().eval()
    config = LoraConfig(target_modules=["0"], r=2, lora_alpha=2, init_lora_weights=False)
    shape = (2, layer.in_features) if isinstance(layer, nn.Linear) else (2, layer.in_channels, 16, 16)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            adapted = get_peft_model(probe, config)
            want = adapted(x)
            got = adapted.merge_and_unload()(x)
    except Exception:  # a layer peft cannot wrap or merge is not exact either
        return False
    return bool((want - got).abs().max() <= 1e-4 * (1 + want.abs().max()))


def exact_layers(model: nn.Module, names: list[str]) -> tuple[list[str], dict[str, int]]:
    """`names` split into layers whose merge is exact and a count per class of those that are not."""
    verdict: dict[tuple, bool] = {}
    exact, inexact = [], {}
    for name in names:
        layer = model.get_submodule(name)
        key = _signature(layer)
        if key not in verdict:
            verdict[key] = merge_is_exact(layer)
        if verdict[key]:
            exact.append(name)
        else:
            inexact[type(layer).__name__] = inexact.get(type(layer).__name__, 0) + 1
    return exact, inexact


class LoRA(TransferStrategy):
    """Only the adapters (rank `rank`, scale `alpha / rank`) and the head train.

    `target_modules`: module-name suffixes to adapt; default `qkv` for ViTs, else every Linear and
    ungrouped Conv2d layer (depthwise convolutions are left alone); layers whose peft merge is not
    exact (weight-standardized convolutions) get weight-space adapters instead.
    """

    def __init__(
        self,
        target_modules: Sequence[str] | None = None,
        rank: Annotated[int, Field(ge=1)] = 8,
        alpha: Annotated[float, Field(gt=0.0)] = 16.0,
        dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.target_modules = list(target_modules) if target_modules else None
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.dropout = float(dropout)

    def resolve_targets(self, model: nn.Module) -> tuple[list[str], list[str]]:
        """Full names of the layers to adapt: (peft adapters, whose merge is exact; weight-space
        adapters, for layers that transform their weight, e.g. weight standardization)."""
        names = _adaptable(model)
        if self.target_modules is None:
            qkv = [n for n in names if n.endswith("qkv")]
            chosen = qkv or names
        else:
            for target in self.target_modules:
                if not any(n == target or n.endswith("." + target) for n in names):
                    suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
                    raise TransferlabError(
                        f"strategy.target_modules: '{target}' matches no Linear or ungrouped Conv2d layer of this backbone (LoRA cannot adapt depthwise convolutions)."
                        f"{did_you_mean(target, suffixes)} Layer names end with: {', '.join(suffixes[:12])}."
                    )
            chosen = [n for n in names if any(n == t or n.endswith("." + t) for t in self.target_modules)]
        exact, inexact = exact_layers(model, chosen)
        if inexact:
            log.info(
                "LoRA adapts %s in weight space (W + BA inside the layer): peft's output-side adapter "
                "would not merge exactly into a layer that re-normalizes its weight.",
                ", ".join(f"{c} {n}" for n, c in inexact.items()),
            )
        return exact, [n for n in chosen if n not in set(exact)]

    def prepare(self, backbone: Backbone) -> None:
        from peft import LoraConfig, get_peft_model

        if self.rank < 1:
            raise TransferlabError(f"strategy.rank={self.rank} must be at least 1.")
        targets, weight_space = self.resolve_targets(backbone.model)
        for name in weight_space:
            layer = backbone.model.get_submodule(name)
            parametrize.register_parametrization(
                layer, "weight", WeightLoRA(layer.weight, self.rank, self.alpha)
            )
        self.resolved_targets, self.weight_space_layers = targets, len(weight_space)
        if not targets:
            return
        # One regex of the exact names: peft matches a list by suffix, so `conv1` would also take
        # `layer1.0.conv1` (a SelectiveKernel in SKNet, a depthwise conv in Xception).
        exact = "|".join(re.escape(t) for t in targets)
        config = LoraConfig(
            target_modules=f"^(?:{exact})$",
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            bias="none",
        )
        try:
            backbone.model = get_peft_model(backbone.model, config)
        except ValueError as exc:  # e.g. a grouped convolution whose groups do not divide the rank
            raise TransferlabError(
                f"strategy.target_modules={self.target_modules} cannot take LoRA adapters of rank {self.rank}: "
                f"{exc} Target other layers (Linear or ungrouped Conv2d) or change strategy.rank."
            ) from None

    def trainable_parameters(self, backbone: Backbone, epoch: int) -> set[int]:
        return {id(p) for n, p in backbone.named_parameters() if ADAPTER_MARK in n}

    def plain_model(self, backbone: Backbone) -> nn.Module:
        """A copy of the backbone model with the adapters merged into the weights."""
        model = copy.deepcopy(backbone.model)
        if hasattr(model, "get_base_model"):
            model = _merge_peft(model.get_base_model())
        for module in model.modules():
            if parametrize.is_parametrized(module, "weight"):
                _merge_weight(module)
        return model
