"""The metrics a run computes on every stage: ours (`core.names.CLASSIFICATION_METRICS`) and a user's own.

A user's metric is any torchmetrics `Metric`, named in the `metrics` config by the key it is logged under::

    metrics:
      precision:
        _target_: torchmetrics.classification.MulticlassPrecision
        average: macro

is logged as `train/precision`, `val/precision` (what `optimized_metric` may name) and `test/precision`
(recorded in results.json and a column of the sweep report). `update(probs, target)` gets the softmax
probabilities and the labels; `num_classes` is passed when the class takes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score

from transferlab.core.errors import TransferlabError, instantiate
from transferlab.core.names import CLASSIFICATION_METRICS, user_metric_problem
from transferlab.core.targets import TARGET, locate


def build_metrics(num_classes: int, extra: Mapping[str, Metric] | None = None) -> MetricCollection:
    """Accuracy, top-5 accuracy (more than 5 classes), macro F1, expected calibration error, and `extra`."""
    acc, f1, ece, top5 = CLASSIFICATION_METRICS
    metrics: dict[str, Any] = {
        acc: MulticlassAccuracy(num_classes, average="micro"),
        f1: MulticlassF1Score(num_classes, average="macro"),
        ece: MulticlassCalibrationError(num_classes, n_bins=15, norm="l1"),
    }
    if num_classes > 5:
        metrics[top5] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    metrics.update(extra or {})
    return MetricCollection(metrics)


def user_metrics(conf: Mapping[str, Any] | None, num_classes: int) -> dict[str, Metric]:
    """The metrics the `metrics` config names (null entries skipped), built for `num_classes` classes."""
    built = {}
    for name, node in (conf or {}).items():
        if node is None:
            continue
        problem = user_metric_problem(name, node)
        if problem:
            raise TransferlabError(problem)
        where = f"metrics.{name}"
        cls = locate(str(node.get(TARGET)), where) if TARGET in node else None
        takes = inspect.isclass(cls) and "num_classes" in inspect.signature(cls).parameters
        kwargs = {"num_classes": num_classes} if takes and "num_classes" not in node else {}
        built[str(name)] = instantiate(
            node, kind=Metric, example="torchmetrics.classification.MulticlassPrecision", **kwargs
        )
    return built
