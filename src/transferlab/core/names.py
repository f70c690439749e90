"""The names several layers share: metrics, paired tests, result files. Plain strings, no torch, so the
config check, the sweeper and the report can use them without loading a model library.

A metric is named `stage/name` (`train/loss`, `val/acc`, `test/f1_macro`); extra test sets add a level
(`test/<set>/acc`).
"""

from __future__ import annotations

from collections.abc import Mapping

# ----------------------------------------------------------------------------- metrics
# What TransferModule computes for every stage (torchmetrics), plus the loss it logs itself.
CLASSIFICATION_METRICS = ("acc", "f1_macro", "ece", "acc_top5")  # acc_top5 only with more than 5 classes
LOSS = "loss"
BEST_VAL_ACC = "val/acc_best"  # the best validation accuracy so far (kept in checkpoints)
TRAIN_STEP_LOSS = "train/loss"  # per step; its epoch mean is train/loss_epoch
TRAIN_EPOCH_LOSS = "train/loss_epoch"
# What optimized_metric may name out of the box (a user's metric adds val/<its name>).
VALIDATION_METRICS = (
    *(f"val/{m}" for m in ("acc", LOSS, "f1_macro", "ece", "acc_top5")),
    BEST_VAL_ACC,
)
DEFAULT_OPTIMIZED_METRIC = "val/acc"
# The per-run numbers a report carries as columns (a user's own test/<name> metrics are added to these).
REPORT_METRICS = (
    *(f"test/{m}" for m in ("acc", "f1_macro", "ece", "acc_top5", LOSS)),
    BEST_VAL_ACC,
    "source/acc_before",
    "source/acc_after",
    "source/acc",
)
LOWER_IS_BETTER = ("ece", LOSS)  # metric names starting with these: smaller is better
OOD_MEAN = "test/ood_mean/{}"


# What the module logs itself under `stage/<name>` (besides CLASSIFICATION_METRICS and LOSS): a user's
# metric (the `metrics` config) may not take these names.
LOGGED_NAMES = ("acc_best", "loss_epoch", "reg", "samples", "source_loss", "source_weight", "source_acc")
TAKEN_METRIC_NAMES = (*CLASSIFICATION_METRICS, LOSS, *LOGGED_NAMES)


def user_metric_problem(name: object, node: object) -> str | None:
    """Why `metrics.<name>: node` cannot be a user's metric (one line with the fix), or None."""
    if str(name) in TAKEN_METRIC_NAMES or "/" in str(name) or not str(name).strip():
        return (
            f"metrics.{name}: the name is taken by transferlab's own metrics or is not one word; "
            f"name it otherwise (taken: {', '.join(TAKEN_METRIC_NAMES)})."
        )
    if not isinstance(node, Mapping) or "_target_" not in node:
        return (
            f"metrics.{name}={node}: a metric is a config node with a _target_ (a torchmetrics Metric "
            f"class), e.g. metrics.{name}._target_=torchmetrics.classification.MulticlassPrecision."
        )
    return None


def metric(stage: str, name: str) -> str:
    """`metric("val", "acc")` -> `val/acc`."""
    return f"{stage}/{name}"


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric `name` (any stage) is better."""
    return not name.rsplit("/", 1)[-1].startswith(LOWER_IS_BETTER)


# ----------------------------------------------------------------------------- paired tests
PAIRED_TESTS = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}  # report.test -> its name
DEFAULT_PAIRED_TEST = "t"

# ----------------------------------------------------------------------------- files
RESULTS_FILE = "results.json"  # one per run, in its output directory
OPTIMIZATION_RESULTS_FILE = "optimization_results.yaml"  # a tuned sweep's best parameters
MULTIRUN_FILE = "multirun.yaml"  # the sweep's config, in the sweep directory
REPORT_FILE = "report.md"
ROWS_FILE = "results.csv"
COMPARISON_FILE = "comparison.csv"
