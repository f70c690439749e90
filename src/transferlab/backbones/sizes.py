"""What to do when images do not fit a backbone: the smallest size it works at, verified by building
and running it, and the exact overrides that get there (fixed-size timm models take `img_size`)."""

from __future__ import annotations

import inspect
import time
from typing import Any

import torch
from torch import nn

MAX_TRIES = 8
MAX_SECONDS = 20.0  # big models take seconds per build: stop probing and name the native size


def _runs(model: nn.Module, in_chans: int, size: int) -> bool:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, size, size))
        return True
    except Exception:
        return False


def _takes_img_size(model: nn.Module) -> bool:
    """Whether the model's class (or a base class it forwards to, e.g. LeViT's distilled one) takes
    an `img_size` argument."""
    for cls in type(model).__mro__[:-1]:
        try:
            if "img_size" in inspect.signature(cls.__init__).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


def _candidates(model: nn.Module, size: int, native: int) -> list[int]:
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    patch = int(patch[0] if isinstance(patch, tuple | list) else patch) if patch else 1
    steps = {-(-size // s) * s for s in (patch, 8, 16, 32, 64) if s}
    sizes = sorted({s for s in steps | {32, 64, 96, 128, 160, 192, 224, 256, native} if s > size})
    return sizes[:MAX_TRIES]


def _build(name: str, in_chans: int, kwargs: dict[str, Any]) -> nn.Module | None:
    import timm

    try:
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    except Exception:
        return None


def size_hint(
    name: str, model: nn.Module, in_chans: int, size: int, kwargs: dict[str, Any]
) -> tuple[str, bool]:
    """(advice, too_small) for a timm model that failed on `size`-pixel images."""
    native = int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])
    deadline = time.monotonic() + MAX_SECONDS
    key = ("" if "img_size" in kwargs else "+") + "backbone.kwargs.img_size"
    if _takes_img_size(model):
        if kwargs.get("img_size") != size:
            built = _build(name, in_chans, {**kwargs, "img_size": size})
            if built is not None and _runs(built, in_chans, size):
                return f"it is built for {native} px: add {key}={size} to build it for {size} px", False
        for s in _candidates(model, size, native):
            if time.monotonic() > deadline:
                break
            built = _build(name, in_chans, {**kwargs, "img_size": s})
            if built is not None and _runs(built, in_chans, s):
                return f"use dataset.image_size={s} {key}={s} (the smallest size it builds for)", s > size
        return (
            f"use dataset.image_size={native} (its native size) without backbone.kwargs.img_size",
            native > size,
        )
    for s in _candidates(model, size, max(native, 1024)):
        if time.monotonic() > deadline:
            break
        if _runs(model, in_chans, s):
            return f"use dataset.image_size={s} or larger", s > size
    return "use a larger dataset.image_size", True
