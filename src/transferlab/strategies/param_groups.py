"""Optimizer parameter groups: timm's weight-decay and layer-decay rules, our per-stage learning rates.

- Weight decay as `timm.optim.param_groups_weight_decay`: none for 1-D parameters (biases, norms), biases,
  and what the model's own `no_weight_decay()` names (a ViT's `pos_embed`, `cls_token`, ...).
- Layer-wise lr decay (`strategy.layer_decay` < 1) as `timm.optim.param_groups_layer_decay`: timm's own
  fine-grained layer map (`group_matcher(coarse=False)`, or `auto_group_layers` for models without one),
  scale `layer_decay ** (last layer - layer)`, the head at 1.
- The strategy's per-stage multipliers (`lr_scales`, `head_lr_mult`) are baked into each group's `lr`
  (torch and Lightning schedulers ignore timm's `lr_scale`).

Each group carries `name` and `param_names`, so `results.json` can show the recipe.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from torch import nn


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """What the model asks to keep out of weight decay (timm's `no_weight_decay()`; patterns allowed)."""
    names = getattr(model, "no_weight_decay", None)
    return set(names()) if callable(names) else set()


def decays(name: str, param: nn.Parameter, no_decay: set[str]) -> bool:
    """timm's rule: no decay for 1-D parameters, biases and the model's own list."""
    return not (param.ndim <= 1 or name.endswith(".bias") or any(fnmatch.fnmatch(name, p) for p in no_decay))


def layer_scales(
    model: nn.Module, layer_decay: float, stages: list[list[nn.Parameter]]
) -> dict[int, tuple[int, float]]:
    """id(parameter) -> (layer id, lr scale), as timm's `param_groups_layer_decay` assigns them; a model
    timm cannot group (a built-in backbone) uses its stages as the layers."""
    names = dict(model.named_parameters())
    layer_map: dict[str, int] = {}
    try:
        from timm.models import group_parameters
        from timm.optim._param_groups import auto_group_layers

        if hasattr(model, "group_matcher"):
            layer_map = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
        elif getattr(model, "pretrained_cfg", None):
            layer_map = auto_group_layers(model)
    except Exception:  # no usable layer metadata: fall back to the stages
        layer_map = {}
    by_id: dict[int, int] = {}
    if layer_map and max(layer_map.values()) > 0:
        last = max(layer_map.values())
        by_id = {id(p): layer_map.get(n, last) for n, p in names.items()}
    else:
        last = max(len(stages) - 1, 0)
        by_id = {id(p): i for i, params in enumerate(stages) for p in params}
    return {pid: (layer, layer_decay ** (last - layer)) for pid, layer in by_id.items()}


def build_param_groups(
    backbone: Any, head: nn.Module, strategy: Any, lr: float, weight_decay: float, include
) -> list[dict[str, Any]]:
    """Groups per backbone stage (and timm layer, with layer decay), split into decayed and not, then the
    head's; parameters for which `include(p)` is false are left out."""
    model = backbone.model
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = no_weight_decay_names(model)
    stages = backbone.stage_parameters()
    layer_decay = float(getattr(strategy, "layer_decay", 1.0) or 1.0)
    layers = layer_scales(model, layer_decay, stages) if layer_decay != 1.0 else {}
    groups: dict[str, dict[str, Any]] = {}

    def add(param: nn.Parameter, name: str, group: str, group_lr: float) -> None:
        if not include(param):
            return
        decayed = decays(name, param, no_decay)
        key = group if decayed else f"{group}.no_decay"
        entry = groups.setdefault(
            key,
            {
                "params": [],
                "param_names": [],
                "lr": group_lr,
                "weight_decay": weight_decay if decayed else 0.0,
            },
        )
        entry["name"] = key
        entry["params"].append(param)
        entry["param_names"].append(name)

    staged: set[int] = set()
    for stage, params, scale in zip(backbone.stages, stages, strategy.lr_scales(len(stages)), strict=True):
        several = len({layers.get(id(p), (0, 1.0))[0] for p in params}) > 1
        for p in params:
            staged.add(id(p))
            layer, layer_scale = layers.get(id(p), (0, 1.0))
            group = f"backbone.{stage.name}" + (f".layer{layer}" if several else "")
            add(p, names.get(id(p), ""), group, lr * scale * layer_scale)
    for name, p in backbone.named_parameters():  # adapters and anything outside every stage: the base lr
        if id(p) not in staged:
            add(p, name.removeprefix("model."), "backbone.adapters", lr)
    return [*groups.values(), *head_groups(head, "head", lr * strategy.head_lr_mult, weight_decay)]


def head_groups(head: nn.Module, name: str, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """A classifier's groups: its weights decayed, its biases not."""
    groups = []
    for decayed in (True, False):
        chosen = [(n, p) for n, p in head.named_parameters() if decays(n, p, set()) == decayed]
        if chosen:
            groups.append(
                {
                    "params": [p for _, p in chosen],
                    "param_names": [f"{name}.{n}" for n, _ in chosen],
                    "lr": lr,
                    "weight_decay": weight_decay if decayed else 0.0,
                    "name": name if decayed else f"{name}.no_decay",
                }
            )
    return groups
