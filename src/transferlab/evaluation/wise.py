"""WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): the weights
(1 - alpha) * anchor + alpha * fine-tuned for each alpha, alpha chosen on validation only.

The anchor is the model a run starts from (pretrained backbone and its initial head) or, for `lp_ft`, the
linear-probed model at the end of the probe phase. `WiseAnchor` saves it into the run's checkpoint
folder, once, so a resumed run interpolates from the same weights.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from transferlab.core.atomic import atomic_open

log = logging.getLogger(__name__)
ANCHOR_FILE = "wise_anchor.pt"
MODEL_KEYS = ("backbone.", "head.")  # what is interpolated: the network, not metric or regularizer state


def model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights and buffers (backbone and head), copied to the CPU."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if k.startswith(MODEL_KEYS)}


def interpolate(
    anchor: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * anchor + alpha * finetuned for floating tensors both have; anything else (integer
    buffers, keys only one has) is the fine-tuned value. alpha 0 and 1 give the endpoints exactly."""
    out = {}
    for key, value in finetuned.items():
        start = anchor.get(key)
        if start is None or not value.is_floating_point() or start.shape != value.shape:
            out[key] = value
        elif alpha == 0:
            out[key] = start.to(value.dtype)
        elif alpha == 1:
            out[key] = value
        else:
            out[key] = ((1 - alpha) * start.to(value.dtype) + alpha * value).to(value.dtype)
    return out


def curve(
    module: torch.nn.Module,
    anchor: dict[str, torch.Tensor],
    alphas: list[float],
    loaders: dict[str, Iterable],
    score: Callable[[dict[str, tuple[torch.Tensor, torch.Tensor]]], dict[str, float]],
    selected_on: str = "val/acc",
    mode: str = "max",
    autocast: Any = None,
) -> tuple[dict[str, Any], dict[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    """`score` of the model at each alpha; the chosen alpha is the best `selected_on` (ties: the larger
    alpha). Also returns each alpha's (logits, labels) per loader. The module holds its fine-tuned
    weights again afterwards."""
    outputs = logits_by_alpha(module, anchor, [float(a) for a in alphas], loaders, autocast)
    points = [{"alpha": float(alpha), **score(outputs[float(alpha)])} for alpha in alphas]  # one per entry
    sign = 1.0 if mode == "max" else -1.0
    best = max(points, key=lambda p: (sign * p[selected_on], p["alpha"]))
    result = {
        "alphas": [float(a) for a in alphas],
        "selected_on": selected_on,
        "chosen_alpha": best["alpha"],
        "curve": points,
    }
    return result, outputs


@torch.no_grad()
def logits_by_alpha(
    module: torch.nn.Module,
    anchor: dict[str, torch.Tensor],
    alphas: list[float],
    loaders: dict[str, Iterable],
    autocast: Any = None,
) -> dict[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(logits, labels) of the interpolated model (in eval mode) at every alpha on every loader, as float32
    on the CPU. Each batch is read once and scored at every alpha, so decoding and shifting the evaluation
    sets costs one pass, not one per alpha; the weights are interpolated per batch from the anchor and the
    fine-tuned weights (two extra copies of the network in memory, not one per alpha)."""
    alphas = list(dict.fromkeys(alphas))  # a repeated alpha is scored once (its samples counted once)
    device = next(module.parameters()).device
    finetuned = {k: v.to(device) for k, v in model_state(module).items()}
    start = {k: v.to(device) for k, v in anchor.items()}
    parts = {alpha: {name: ([], []) for name in loaders} for alpha in alphas}
    was_training = module.training
    module.eval()
    try:
        with autocast if autocast is not None else contextlib.nullcontext():
            for name, loader in loaders.items():
                for x, y in loader:
                    x, y = x.to(device), torch.as_tensor(y).cpu()
                    for alpha in alphas:
                        module.load_state_dict(interpolate(start, finetuned, alpha), strict=False)
                        parts[alpha][name][0].append(module(x).float().cpu())
                        parts[alpha][name][1].append(y)
    finally:
        module.load_state_dict(finetuned, strict=False)
        module.train(was_training)
    return {
        alpha: {name: (torch.cat(logits), torch.cat(labels)) for name, (logits, labels) in by_set.items()}
        for alpha, by_set in parts.items()
    }


class WiseAnchor(pl.Callback):
    """Saves the weights WiSE-FT interpolates from: the starting weights when fitting begins, and for
    strategies with a probe phase (`probe_epochs`) the probed model when fine-tuning starts.

    Written once each (atomically); a resumed run finds the file and keeps it. The start is saved when the
    fit starts, before the first checkpoint: a run with no anchor yet has no checkpoint of its own to resume.
    """

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / ANCHOR_FILE

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not self.path.is_file():
            self._save(pl_module, "start", 0)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        probe = int(getattr(getattr(pl_module, "strategy", None), "probe_epochs", 0) or 0)
        if probe and trainer.current_epoch == probe and trainer.is_global_zero:
            if load_anchor(self.path.parent).get("kind") != "linear_probe":
                self._save(pl_module, "linear_probe", probe)

    def _save(self, pl_module: pl.LightningModule, kind: str, epoch: int) -> None:
        with atomic_open(self.path, "wb") as f:
            torch.save({"kind": kind, "epoch": epoch, "state": model_state(pl_module)}, f)
        log.info("WiSE-FT anchor (%s weights, epoch %d) saved to %s", kind, epoch, self.path)


def load_anchor(dirpath: str | Path) -> dict[str, Any]:
    """The saved anchor ({kind, epoch, state}), or {} when none was saved."""
    path = Path(dirpath) / ANCHOR_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}
