"""Greedy model soup (Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time"): the fine-tuned models of one arm's tuning trials,
in order of their validation score, each added to the uniform average only if validation does not get
worse. The soup starts from the best trial, so it never scores lower on validation than that trial.

A soup is one job of the sweep (`tuning.soup=greedy`), with the best trial's configuration and the trials'
seed (their validation split), `soup.study` and `soup.sweep_dir` set; it trains nothing, and is tested once
like a final run. Its cost is its ingredients' training time (`soup.train_seconds`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from transferlab.core.errors import TransferlabError
from transferlab.evaluation.scoring import loader_of, predict, scores
from transferlab.evaluation.wise import MODEL_KEYS

log = logging.getLogger(__name__)
SELECTABLE = ("val/acc", "val/f1_macro", "val/ece", "val/loss")


def ingredients(sweep_dir: str | Path, study: str, mode: str = "max") -> list[dict[str, Any]]:
    """The study's finished trials with a checkpoint, best validation score first."""
    found = []
    for path in Path(sweep_dir).glob("*/results.json"):
        record = json.loads(path.read_text())
        tuning = record.get("tuning") or {}
        value = (record.get("objective") or {}).get("value")
        best = record.get("best_checkpoint")
        if tuning.get("phase") == "trial" and tuning.get("study") == study and record.get("status") == "ok":
            if value is not None and best and Path(best).is_file():
                found.append(
                    {"job": path.parent.name, "value": float(value), "checkpoint": best, "record": record}
                )
    return sorted(found, key=lambda r: (-r["value"] if mode == "max" else r["value"], r["job"]))


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of floating tensors; other tensors (counters) from the first state."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = (sum(s[key].double() for s in states) / len(states)).to(first.dtype)
        else:
            out[key] = first
    return out


def cook(cfg: Any, module: Any, datamodule: Any, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Build the greedy soup of `cfg.soup.study` into `module`; returns what results.json keeps."""
    study, sweep_dir = str(cfg.soup.study), str(cfg.soup.sweep_dir)
    mode = str(cfg.optimized_mode)
    found = ingredients(sweep_dir, study, mode)
    if not found:
        raise TransferlabError(
            f"soup.study={study}: no finished tuning trial with a checkpoint in soup.sweep_dir={sweep_dir}; "
            "run the tuning first (experiment=tuned_comparison tuning.soup=greedy)."
        )
    own = {k: v.shape for k, v in module.state_dict().items() if k.startswith(MODEL_KEYS)}
    states, kept = [], []
    for item in found:
        saved = torch.load(item["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
        state = {k: v for k, v in saved.items() if k in own}
        if {k: v.shape for k, v in state.items()} != own:  # another architecture (e.g. a LoRA rank)
            log.warning("Soup: trial job %s has other weights than this model: left out.", item["job"])
            continue
        states.append(state)
        kept.append(item)
    metric = str(cfg.optimized_metric) if str(cfg.optimized_metric) in SELECTABLE else "val/acc"
    sign = 1.0 if mode == "max" else -1.0
    loader = loader_of(datamodule.dataset("val", augment=False), datamodule.eval_batch_size)
    module.to(device)
    cached, module.use_cached_features = module.use_cached_features, False  # the val images themselves

    def score(state: dict[str, torch.Tensor]) -> float:
        module.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
        return scores(*predict(module, loader, device), module.num_classes, module.criterion)[
            metric.split("/")[1]
        ]

    used, best = [0], score(states[0])
    steps = [{"job": kept[0]["job"], "trial_value": kept[0]["value"], "soup_value": best, "added": True}]
    for i in range(1, len(states)):
        value = score(average([states[j] for j in [*used, i]]))
        added = sign * value >= sign * best
        if added:
            used, best = [*used, i], value
        steps.append(
            {"job": kept[i]["job"], "trial_value": kept[i]["value"], "soup_value": value, "added": added}
        )
    module.load_state_dict(
        {k: v.to(device) for k, v in average([states[j] for j in used]).items()}, strict=False
    )
    module.use_cached_features = cached
    log.info("Greedy soup of %d/%d trials of %s: %s %.4f.", len(used), len(states), study, metric, best)
    return {
        "method": "greedy",
        "study": study,
        "selected_on": metric,
        "value": best,
        "ingredients": len(used),
        "candidates": len(states),
        "steps": steps,
        "train_seconds": round(sum(float(k["record"].get("train_seconds") or 0) for k in kept), 3),
    }
