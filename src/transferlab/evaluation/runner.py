"""After the test: the selected model scored on every extra test set (`eval_sets`), its temperature
fitted on validation and applied everywhere (`calibration`), and the WiSE-FT curve (`wise`).

`Evaluation.plan` runs before training, so a bad set (unknown class, missing folder) stops the run before
it trains; `Evaluation.run` runs after the test on the selected checkpoint, in one process (rank 0), and
sends its metrics to the run's loggers (CSV, W&B, TensorBoard) and the record.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import IterableDataset

from transferlab.core.errors import TransferlabError
from transferlab.evaluation.calibration import fit_temperature
from transferlab.evaluation.scoring import confusion, loader_of, predict, scores
from transferlab.evaluation.sets import EvalSet, build_eval_sets
from transferlab.evaluation.wise import ANCHOR_FILE, curve, interpolate, load_anchor, model_state

log = logging.getLogger(__name__)
OOD_MEAN = "ood_mean"


@dataclass
class Evaluation:
    """What a run scores after its test."""

    sets: list[EvalSet] = field(default_factory=list)
    calibrate: bool = False
    wise: dict[str, Any] | None = None

    @classmethod
    def plan(cls, cfg: DictConfig, datamodule: Any) -> Evaluation:
        if not cfg.get("test", True):
            return cls()
        wise = cfg.get("wise") or {}
        alphas = [float(a) for a in wise.get("alphas") or []]
        if wise.get("enabled") and (not alphas or any(not 0.0 <= a <= 1.0 for a in alphas)):
            raise TransferlabError(f"wise.alphas={alphas} must be a non-empty list of values in [0, 1].")
        return cls(
            sets=build_eval_sets(cfg, datamodule),
            calibrate=bool((cfg.get("calibration") or {}).get("enabled", False)),
            wise={
                "alphas": alphas,
                "selected_on": str(cfg.optimized_metric),
                "mode": str(cfg.optimized_mode),
                "apply": bool(wise.get("apply", False)),
                "head": str(wise.get("head", "interpolate")),
            }
            if wise.get("enabled")
            else None,
        )

    @property
    def active(self) -> bool:
        return bool(self.sets or self.calibrate or self.wise)

    def run(
        self, trainer: pl.Trainer, module: Any, datamodule: Any, out: Path, record: dict
    ) -> dict[str, float]:
        """Score the module's current (selected) weights; return the metrics and fill the record."""
        if not self.active or not trainer.is_global_zero:
            return {}
        device = trainer.strategy.root_device
        cached, home = module.use_cached_features, next(module.parameters()).device
        module.use_cached_features = False  # the extra sets are images: the whole network scores them
        module.to(device)
        try:
            loaders = {"val": _loader(datamodule, "val"), "test": _loader(datamodule, "test")}
            loaders |= {s.name: loader_of(s.dataset, datamodule.eval_batch_size) for s in self.sets}

            autocast = trainer.precision_plugin.forward_context
            metrics, outputs = {}, None
            if self.wise is not None:  # wise.apply: the chosen interpolation is the run's model from here
                metrics, outputs = self._wise(module, out, record, loaders, autocast)
            if outputs is None:  # the curve's outputs of the weights the module holds serve when it has them
                outputs = {n: predict(module, loader, device, autocast()) for n, loader in loaders.items()}
            applied = bool((record.get("wise") or {}).get("applied"))
            metrics |= self._scored(outputs, module, record, applied)
        finally:
            module.use_cached_features = cached
            module.to(home)
        record["eval_sets"] = {s.name: s.description for s in self.sets}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        return metrics

    def _scored(self, outputs, module, record, replace_test: bool = False) -> dict[str, float]:
        temperature = None
        if self.calibrate:
            val_logits, val_labels = outputs["val"]
            temperature = fit_temperature(val_logits, val_labels)
        metrics, per_set = {}, {}
        for name, (logits, labels) in outputs.items():
            if name == "val":
                continue
            s = scores(logits, labels, module.num_classes, module.criterion, temperature)
            per_set[name] = s
            if name == "test" and replace_test:  # the WiSE-FT model replaced the tested one
                metrics |= {f"test/{k}": v for k, v in s.items()}
                record["confusion_matrix"] = confusion(logits, labels, module.num_classes)
            elif name == "test":  # the test's own metrics stay those of trainer.test; calibration is added
                metrics |= {f"test/{k}": v for k, v in s.items() if k.endswith("_calibrated")}
            else:
                metrics |= {f"test/{name}/{k}": v for k, v in s.items()}
        if self.sets:
            metrics[f"test/{OOD_MEAN}/acc"] = sum(per_set[s.name]["acc"] for s in self.sets) / len(self.sets)
        if temperature is not None:
            val = scores(*outputs["val"], module.num_classes, temperature=temperature)
            record["calibration"] = {
                "method": "temperature scaling",
                "fitted_on": "val",
                "temperature": temperature,
                "val": {
                    "nll_before": val["loss"],
                    "nll_after": val["loss_calibrated"],
                    "ece_before": val["ece"],
                    "ece_after": val["ece_calibrated"],
                },
                "ece": {n: {"before": s["ece"], "after": s["ece_calibrated"]} for n, s in per_set.items()},
            }
        return metrics

    def _wise(self, module, out: Path, record, loaders, autocast) -> tuple[dict[str, float], dict | None]:
        """The WiSE-FT curve's metrics, and the (logits, labels) per loader of the weights the module holds
        afterwards (the fine-tuned ones at alpha 1, or the chosen ones under wise.apply) when the curve has
        them."""
        anchor = load_anchor(out / "checkpoints")
        if not anchor:
            record["wise"] = {
                "skipped": f"no {ANCHOR_FILE}: the head was fitted outright, there was no training loop"
            }
            log.warning("wise.enabled: skipped (%s).", record["wise"]["skipped"])
            return {}, None
        selected_on = self.wise["selected_on"]
        if selected_on not in ("val/acc", "val/f1_macro", "val/ece", "val/loss"):
            selected_on = "val/acc"  # e.g. val/acc_best: per alpha, the accuracy is what there is
        finetuned, start = model_state(module), anchor["state"]
        if self.wise["head"] == "finetuned":  # only the backbone moves; the fine-tuned head stays
            start = {k: v for k, v in start.items() if not k.startswith("head.")}
        result, outputs = curve(
            module,
            start,
            self.wise["alphas"],
            loaders,
            lambda by_set: self._point(by_set, module),
            selected_on,
            self.wise["mode"],
            autocast(),
        )
        result["anchor"] = {"kind": anchor["kind"], "epoch": anchor["epoch"], "head": self.wise["head"]}
        result["applied"] = self.wise["apply"]
        held = 1.0
        if self.wise["apply"]:  # tested, calibrated and exported from here on
            held = result["chosen_alpha"]
            device = next(module.parameters()).device
            weights = interpolate(start, finetuned, held)
            module.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
        record["wise"] = result
        chosen = next(p for p in result["curve"] if p["alpha"] == result["chosen_alpha"])
        log.info(
            "WiSE-FT: alpha %g chosen on %s (%.4f).", result["chosen_alpha"], selected_on, chosen[selected_on]
        )
        metrics = {"wise/alpha": result["chosen_alpha"]}
        metrics |= {
            f"wise/{k}": v for k, v in chosen.items() if k.startswith(("test/", "val/")) and math.isfinite(v)
        }
        return metrics, outputs.get(held)

    def _point(self, outputs: dict[str, tuple[torch.Tensor, torch.Tensor]], module) -> dict[str, float]:
        """One point of the WiSE-FT curve: val/*, test/* and test/<set>/* of one alpha's outputs."""
        point = {}
        for name, (logits, labels) in outputs.items():
            prefix = {"val": "val/", "test": "test/"}.get(name, f"test/{name}/")
            point |= {
                f"{prefix}{k}": v
                for k, v in scores(logits, labels, module.num_classes, module.criterion).items()
            }
        if self.sets:
            point[f"test/{OOD_MEAN}/acc"] = sum(point[f"test/{s.name}/acc"] for s in self.sets) / len(
                self.sets
            )
        return point


def _loader(datamodule: Any, split: str):
    """A split of the run's own data, every sample once in this process."""
    if hasattr(datamodule, "dataset") and hasattr(datamodule, "splits"):
        dataset = datamodule.dataset(split, augment=False)
        if not isinstance(dataset, IterableDataset):
            return loader_of(dataset, datamodule.eval_batch_size)
    return datamodule.eval_dataloader(split)
