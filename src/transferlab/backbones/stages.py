"""Ordered backbone stages (stem first, head excluded) for timm and built-in models."""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn


@dataclass(frozen=True)
class Stage:
    """An ordered group of backbone parameters, named after the modules it holds."""

    name: str
    param_names: tuple[str, ...]

    def modules(self) -> list[str]:
        """Owning module names (one level below the top, e.g. `layer1.0`), in order, without repeats."""
        seen: dict[str, None] = {}
        for name in self.param_names:
            parts = name.split(".")
            owner = parts[:-1] or parts
            seen.setdefault(".".join(owner[:2]))
        return list(seen)


def _stage_name(index: int, names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    # Never name a stage after a single parameter (e.g. `bias`).
    if common and len(common) == len(parts[0]):
        common = common[:-1]
    if common:
        return ".".join(common)
    if index == 0:
        return "stem"
    tops: dict[str, None] = {}
    for p in parts:
        tops.setdefault(".".join(p[:2]) if len(p) > 2 else p[0])
    return "+".join(tops)


def timm_stages(model: nn.Module) -> list[Stage]:
    """Stages of a timm model from its `group_matcher(coarse=True)`; parameter-less groups are dropped."""
    groups = group_parameters(model, model.group_matcher(coarse=True))
    names = [list(v) for v in groups.values() if v]
    return [Stage(_stage_name(i, n), tuple(n)) for i, n in enumerate(names)]


def declared_stages(model: nn.Module, stage_names: tuple[str, ...]) -> list[Stage]:
    """Stages of a built-in model that declares its top-level stage modules in order."""
    stages = []
    for name in stage_names:
        params = tuple(f"{name}.{p}" for p, _ in getattr(model, name).named_parameters())
        stages.append(Stage(name, params))
    return stages
