"""Logits of a model on a loader, and the test metrics computed from them (the module's own definitions:
accuracy, macro F1, 15-bin L1 calibration error, the training criterion's loss)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

ECE_BINS = 15  # as `transferlab.module.build_metrics`


def loader_of(dataset: Dataset, batch_size: int) -> DataLoader:
    """Every sample once, in order, in this process (no distributed sharding: one process scores all)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def predict(
    model: nn.Module, loader, device: torch.device | str = "cpu", autocast=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of `model` (in eval mode) on every batch of `loader`, as float32 on the CPU."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        with autocast if autocast is not None else contextlib.nullcontext():
            for x, y in loader:
                logits.append(model(x.to(device)).float().cpu())
                labels.append(torch.as_tensor(y).cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def confusion(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Rows: true class, columns: predicted (as results.json's confusion_matrix)."""
    return multiclass_confusion_matrix(logits.argmax(-1), labels, num_classes).int().tolist()


def scores(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    criterion: nn.Module | None = None,
    temperature: float | None = None,
) -> dict[str, float]:
    """acc, f1_macro, ece and loss of `logits`; with `temperature` also ece_calibrated and
    loss_calibrated (the NLL of logits / temperature)."""
    criterion = criterion or nn.CrossEntropyLoss()
    probs = logits.softmax(-1)
    out: dict[str, Any] = {
        "acc": multiclass_accuracy(probs, labels, num_classes, average="micro"),
        "f1_macro": multiclass_f1_score(probs, labels, num_classes, average="macro"),
        "ece": multiclass_calibration_error(probs, labels, num_classes, n_bins=ECE_BINS, norm="l1"),
        "loss": criterion(logits, labels),
    }
    if num_classes > 5:  # as the module's test metrics
        out["acc_top5"] = multiclass_accuracy(probs, labels, num_classes, top_k=5, average="micro")
    if temperature is not None:
        scaled = logits / temperature
        out["ece_calibrated"] = multiclass_calibration_error(
            scaled.softmax(-1), labels, num_classes, n_bins=ECE_BINS, norm="l1"
        )
        out["loss_calibrated"] = nn.functional.cross_entropy(scaled, labels)
    return {k: float(v) for k, v in out.items()}


@torch.no_grad()
def accuracy(backbone: nn.Module, head: nn.Module, loader, num_classes: int) -> float:
    """Top-1 accuracy of `head(backbone(x))` over `loader`, in eval mode (modes restored afterwards)."""
    device = next(head.parameters()).device
    modes = [(m, m.training) for m in (backbone, head)]
    backbone.eval()
    head.eval()
    metric = MulticlassAccuracy(num_classes, average="micro").to(device)
    try:
        for x, y in loader:
            metric.update(head(backbone(x.to(device))), y.to(device))
    finally:
        for module, mode in modes:
            module.train(mode)
    return float(metric.compute())
