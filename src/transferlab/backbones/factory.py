"""`create_backbone`: any timm model by name, or a built-in one, with weights and stages resolved."""

from __future__ import annotations

import logging
import os
from typing import Any

import timm
import torch
from timm.data import resolve_data_config

from transferlab.backbones.backbone import Backbone
from transferlab.backbones.simple_cnn import SimpleCNN
from transferlab.backbones.sizes import size_hint
from transferlab.backbones.stages import declared_stages, timm_stages
from transferlab.backbones.weights import (
    file_sha256,
    load_into,
    read_state_dict,
    resolve_weights_path,
    state_dict_sha256,
)
from transferlab.core.errors import TransferlabError, did_you_mean

log = logging.getLogger(__name__)

BUILTINS = {"simple_cnn": SimpleCNN}


def create_backbone(
    name: str,
    pretrained: bool | str | None = False,
    image_size: int | None = None,
    in_chans: int = 3,
    kwargs: dict[str, Any] | None = None,
) -> Backbone:
    """Build backbone `name` (a timm model or a built-in) without classifier.

    `pretrained`: false (random), true (timm hub/URL), or a path to a weights file
    (`.safetensors`, `.pth`, `.bin`) or to a transferlab run directory with an exported backbone.
    """
    kwargs = dict(kwargs or {})
    model = _build(name, in_chans, image_size, kwargs)
    weights = _load_weights(model, name, pretrained)
    num_features = _check_forward(model, name, in_chans, image_size, kwargs)
    if name in BUILTINS:
        stages, source = declared_stages(model, model.stage_names), "declared"
        data_config = {
            "mean": (0.5,) * in_chans,
            "std": (0.5,) * in_chans,
            "input_size": (in_chans, image_size, image_size),
        }
    else:
        stages, source = _resolve_stages(model, name)
        data_config = dict(resolve_data_config({}, model=model))
    log.info("Backbone %s: %d stages from %s.", name, len(stages), STAGE_SOURCES.get(source, source))
    backbone = Backbone(model, name, stages, num_features, data_config, kwargs=kwargs, weights=weights)
    backbone.stage_source, backbone.in_chans = source, in_chans
    backbone.image_size = image_size or (32 if name in BUILTINS else 224)
    return backbone


STAGE_SOURCES = {
    "declared": "the built-in model's declared stages",
    "group_matcher": "timm's group_matcher",
    "feature_info": "timm's feature_info (the model has no group_matcher)",
    "top-level children": "the model's top-level children (no group_matcher, no feature_info)",
}


def _resolve_stages(model: torch.nn.Module, name: str):
    try:
        return timm_stages(model)
    except Exception as exc:  # the model itself was built: say that its stage metadata is the problem
        raise TransferlabError(
            f"backbone '{name}' was built, but its stages could not be resolved ({type(exc).__name__}: "
            f"{str(exc)[:200]}); strategies that need stages (partial, gradual_unfreeze, layer_decay) "
            "cannot use it: please report it with the model name."
        ) from None


def check_name(name: str) -> None:
    """Raise `TransferlabError` with the closest names unless `name` is a built-in or a timm model."""
    if name not in BUILTINS and not timm.is_model(name):
        choices = list(BUILTINS) + timm.list_models()
        raise TransferlabError(
            f"Unknown backbone '{name}' (backbone.name).{did_you_mean(name, choices)} "
            "Any timm model works: see timm.list_models('*pattern*')."
        )


def _build(name: str, in_chans: int, image_size: int | None, kwargs: dict[str, Any]) -> torch.nn.Module:
    if name in BUILTINS:
        return BUILTINS[name](in_chans=in_chans, image_size=image_size or 32, **kwargs)
    check_name(name)
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        raise TransferlabError(
            f"backbone.kwargs {kwargs} are not accepted by timm model '{name}': {exc}"
        ) from None
    except Exception as exc:  # e.g. an img_size/window_size combination the architecture refuses
        if not kwargs:
            raise
        raise TransferlabError(
            f"timm could not build '{name}' with backbone.kwargs {kwargs} ({type(exc).__name__}: "
            f"{str(exc)[:200]}); change or remove those kwargs."
        ) from None


def _load_weights(model: torch.nn.Module, name: str, pretrained: bool | str | None) -> dict[str, Any]:
    if pretrained in (False, None, "false", "False", ""):
        return {"source": "random"}
    if pretrained is True or pretrained in ("true", "True"):
        return _load_hub_weights(model, name)
    path, meta = resolve_weights_path(str(pretrained))
    if meta and meta.get("architecture") and meta["architecture"] != name:
        raise TransferlabError(
            f"backbone.pretrained={pretrained} holds weights of '{meta['architecture']}', but backbone.name is "
            f"'{name}'. Set backbone.name={meta['architecture']} or choose weights saved from '{name}'."
        )
    dropped = load_into(model, read_state_dict(path), source=str(path), arch=name)
    if dropped:
        log.warning(
            "Dropped the classifier of %s (%s); a fresh head is trained for this dataset.", path, dropped
        )
    return {"source": "file", "path": str(path.resolve()), "sha256": file_sha256(path), "from_run": meta}


def _load_hub_weights(model: torch.nn.Module, name: str) -> dict[str, Any]:
    """Download timm's pretrained weights for `name`; offline, fail at once with a way forward."""
    try:
        hub = timm.create_model(name, pretrained=True, num_classes=0, in_chans=_in_chans(model))
    except Exception as exc:  # network, hub or cache errors come in many types
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TransferlabError(
            f"Could not get pretrained weights for '{name}' (backbone.pretrained=true): {cause}. "
            "Without network access, download them elsewhere and point at the file: "
            f"backbone.pretrained=/path/to/{name}.safetensors (or .pth, or a transferlab run directory)."
        ) from None
    state = hub.state_dict()
    model.load_state_dict(state)
    source = os.environ.get("HF_ENDPOINT", "timm hub")
    return {
        "source": "hub",
        "hub": source,
        "tag": model.pretrained_cfg.get("hf_hub_id"),
        "sha256": state_dict_sha256(state),
    }


def _in_chans(model: torch.nn.Module) -> int:
    for p in model.parameters():
        if p.ndim == 4:
            return p.shape[1]
    return 3


def _check_forward(
    model: torch.nn.Module, name: str, in_chans: int, image_size: int | None, kwargs: dict[str, Any]
) -> int:
    """Run one image through the model: catches too-small images early and measures the feature size."""
    size = image_size or 224
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_chans, size, size))
    except Exception as exc:
        if name in BUILTINS:
            raise TransferlabError(
                f"dataset.image_size={size} does not fit backbone '{name}' ({type(exc).__name__}); use a larger one."
            ) from None
        advice, too_small = size_hint(name, model, in_chans, size, kwargs)
        fault = "is too small for" if too_small else "does not fit"
        raise TransferlabError(
            f"dataset.image_size={size} {fault} backbone '{name}' ({type(exc).__name__}): {advice} (or pick another backbone)."
        ) from None
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise TransferlabError(
            f"Backbone '{name}' returns features of shape {tuple(out.shape)}; expected (batch, features)."
        )
    return out.shape[1]
