"""`TransferModule`: backbone + new head + loss + metrics, trained the way its strategy says.

The module knows a strategy and a regularizer by their methods only (it imports neither): what trains
and with which param groups comes from the strategy, the extra loss term from the regularizer. What a
run adds around it (the divergence guard, resume repairs, caches) are callbacks and hooks in `run/` and
in the strategy."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from transferlab.backbones import Backbone
from transferlab.core.faults import crash_point
from transferlab.core.names import BEST_VAL_ACC, LOSS, TRAIN_EPOCH_LOSS, TRAIN_STEP_LOSS
from transferlab.metrics import build_metrics

log = logging.getLogger(__name__)
_BN = nn.modules.batchnorm._BatchNorm


class TransferModule(pl.LightningModule):
    """A backbone, a fresh linear head for `num_classes`, and the strategy that decides what trains.

    Frozen backbone parts keep `requires_grad=False` (static strategies) or have their gradients
    dropped before each optimizer step (gated strategies), and stay in eval mode (BatchNorm running
    statistics untouched) unless `strategy.train_bn`.
    """

    def __init__(
        self,
        backbone: Backbone,
        strategy: Any,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        regularizer: Any = None,
        metrics: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(
            ignore=["backbone", "strategy", "optimizer", "scheduler", "regularizer", "metrics"]
        )
        self.num_classes = num_classes
        strategy.check(backbone)
        strategy.prepare(backbone)
        self.backbone = backbone
        self.strategy = strategy
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(backbone.num_features, num_classes))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.optimizer_factory = optimizer or _default_optimizer
        self.scheduler_factory = scheduler
        metrics = build_metrics(num_classes, metrics)  # ours, and the user's own (`metrics` config)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # Epoch means of the loss, weighted by batch size and synced across processes exactly.
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self._test_count = 0  # samples this process scored; summed over processes at the end of the test
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion: list[list[int]] | None = None
        self.val_acc_best = MaxMetric()
        # States a checkpoint must carry so that a resumed run ends exactly as an uninterrupted one: a step
        # checkpoint falls mid-epoch, and the end-of-epoch one before the epoch's training metrics are logged.
        for metric in (self.train_metrics, self.train_loss, self.val_acc_best):
            metric.persistent(True)
        self.use_cached_features = False
        self._frozen_ids: set[int] = set()
        self._gated: list[nn.Parameter] = []
        self._applied_epoch: int | None = None
        self.param_group_record: list[dict[str, Any]] | None = None  # the optimizer's groups, as recorded
        self.apply_strategy(0)
        self.regularizer = regularizer
        if regularizer is not None:
            regularizer.check(self)
            regularizer.attach(self)
            self.train_reg = MeanMetric()
            self.train_reg.persistent(True)

    # ------------------------------------------------------------ strategy
    def apply_strategy(self, epoch: int) -> None:
        """Set what trains at `epoch`: requires_grad or gates, and eval mode for frozen modules."""
        trainable = self.strategy.trainable_parameters(self.backbone, epoch)
        params = list(self.backbone.parameters())
        frozen = [p for p in params if id(p) not in trainable]
        for p in params:
            p.requires_grad_(True if self.strategy.gated else id(p) in trainable)
        self._gated = frozen if self.strategy.gated else []
        changed = {id(p) for p in frozen} != self._frozen_ids or self._applied_epoch is None
        self._frozen_ids = {id(p) for p in frozen}
        self._applied_epoch = epoch
        if self.training:
            self._set_frozen_modes()
        if changed:
            info = self.strategy_summary()
            log.info(
                "Epoch %d, strategy %s: frozen stages %s (%d params); trainable backbone params %d; %s",
                epoch,
                self.strategy.name,
                info["frozen_stages"] or "none",
                info["frozen_params"],
                info["trainable_backbone_params"],
                info["bn_policy"],
            )

    def train(self, mode: bool = True) -> TransferModule:
        super().train(mode)
        if mode:
            self._set_frozen_modes()
        return self

    def _set_frozen_modes(self) -> None:
        """Backbone in train mode except frozen parts (eval); unfrozen parts return to train mode."""
        self.backbone.train()
        frozen = self._frozen_ids

        def visit(module: nn.Module) -> None:
            own = list(module.parameters())
            if own and all(id(p) in frozen for p in own):
                module.eval()
                if self.strategy.train_bn:
                    for m in module.modules():
                        if isinstance(m, _BN):
                            m.train()
                return
            for child in module.children():
                visit(child)

        visit(self.backbone)

    @property
    def frozen_ids(self) -> set[int]:
        """ids of the backbone parameters frozen now."""
        return set(self._frozen_ids)

    def frozen_parameter_names(self) -> list[str]:
        return [n for n, p in self.backbone.named_parameters() if id(p) in self._frozen_ids]

    def strategy_summary(self) -> dict[str, Any]:
        """Per-stage trainable parameters, frozen stages and the BatchNorm policy (`strategy.summary`)."""
        return self.strategy.summary(self.backbone, self._frozen_ids)

    def replace_head(self, head: nn.Module) -> None:
        """Use a head fitted outside the training loop (an L-BFGS probe's Linear, a k-NN)."""
        if isinstance(head, nn.Linear):
            self.head[-1] = head
        else:
            self.head = head

    def extra_epoch_metrics(self) -> dict[str, float]:
        """More training metrics for the epoch's row (subclasses: e.g. the source task's accuracy)."""
        return {}

    def fit_metrics(self) -> dict[str, float]:
        """What the fit leaves in the record: the best validation accuracy (kept in checkpoints, so a run
        resumed after its last epoch reports it too)."""
        best = float(self.val_acc_best.max_value)  # the metric's state; -inf before any validation
        return {BEST_VAL_ACC: best} if math.isfinite(best) else {}

    def validation_metric_names(self) -> list[str]:
        """Every metric logged under `val/` (what `optimized_metric` may name)."""
        return sorted([*self.val_metrics.keys(keep_base=False), f"val/{LOSS}", BEST_VAL_ACC])

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameters now, the head included."""
        total = sum(p.numel() for p in self.backbone.parameters()) + sum(
            p.numel() for p in self.head.parameters()
        )
        frozen = sum(p.numel() for p in self.backbone.parameters() if id(p) in self._frozen_ids)
        return total - frozen, total

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x if self.use_cached_features else self.backbone(x)
        return self.head(features)

    def _step(
        self, batch: Any, stage: str, metrics: MetricCollection
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The task loss, logits and features of one batch; updates the stage's metrics."""
        crash_point(f"{stage}_step")
        x, y = batch
        features = x if self.use_cached_features else self.backbone(x)
        logits = self.head(features)
        loss = self.criterion(logits, y)
        metrics.update(logits.detach().softmax(dim=-1), y)
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=len(y))
        return loss, logits, features

    def _log_epoch(self, stage: str, metrics: MetricCollection) -> None:
        # Logged once per epoch (Lightning computes, syncs across processes and resets them).
        self.log_dict(metrics, prog_bar=stage != "train")
        name = TRAIN_EPOCH_LOSS if stage == "train" else f"{stage}/{LOSS}"  # train/loss is per step
        self.log(name, getattr(self, f"{stage}_loss"), prog_bar=stage != "train")

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """The loss (task loss + regularizer), and the task loss alone (`run.divergence` watches it)."""
        task_loss, _, features = self._step(batch, "train", self.train_metrics)
        loss = task_loss
        if self.regularizer is not None:
            reg = self.regularizer.penalty(self, batch[0], features)
            self.train_reg.update(reg.detach(), weight=len(batch[1]))
            self.log("train/reg", reg, on_step=True, on_epoch=False, batch_size=len(batch[1]))
            loss = loss + reg
        # `train/loss` per step (the contract's name); its epoch mean at the epoch end
        self.log(TRAIN_STEP_LOSS, loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch[1]))
        return {"loss": loss, "task_loss": task_loss.detach()}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        _, logits, _ = self._step(batch, "test", self.test_metrics)
        self._test_count += len(batch[1])
        self.confusion.update(logits, batch[1])

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self) -> None:
        """A fresh run's regularizer prepares on a few training batches (a resumed run restored its
        references from the checkpoint); every process then holds rank 0's."""
        if self.regularizer is None:
            return
        self.regularizer.prepare(self, self.regularizer.first_batches(self.trainer.datamodule))
        for buffer in self.regularizer.buffers():
            buffer.copy_(self.trainer.strategy.broadcast(buffer, src=0))

    def on_train_start(self) -> None:
        if self.global_step == 0:  # not when resuming
            self.val_acc_best.reset()
            return
        # Resumed (on_train_epoch_start is skipped when it resumes mid-epoch): the strategy's state for
        # this epoch (the random streams and the schedule: `run.resume_repair`).
        self.apply_strategy(self.current_epoch)

    def on_train_epoch_start(self) -> None:
        self.apply_strategy(self.current_epoch)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Gated frozen parameters keep requires_grad (DDP needs a fixed set), so a module that caches
        # tensors in eval mode (timm LeViT, EfficientViT-M, TinyViT attention biases) would carry this
        # step's graph into the next: switching the frozen parts to train and back clears such caches.
        if self.strategy.gated and self._frozen_ids:
            self._set_frozen_modes()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        for p in self._gated:  # gated (frozen) parameters: no update, no weight decay, no optimizer state
            p.grad = None

    def on_train_epoch_end(self) -> None:
        """The epoch's training metrics go to the loggers here, directly, not through `self.log`: Lightning
        writes `self.log` values after the end-of-epoch checkpoint, so a run killed in between, or resumed
        from it (the restart skips the epoch's end), would never log them."""
        if self.train_loss.weight == 0:  # no training batch this epoch
            return
        values = {name: float(value) for name, value in self.train_metrics.compute().items()}
        values[TRAIN_EPOCH_LOSS] = float(self.train_loss.compute())
        if self.regularizer is not None:
            values["train/reg_epoch"] = float(self.train_reg.compute())
            self.train_reg.reset()
        values.update(self.extra_epoch_metrics())
        values["epoch"] = float(self.trainer.fit_loop.epoch_progress.current.processed - 1)
        self.train_metrics.reset()
        self.train_loss.reset()  # reset before the checkpoint: it must not carry a finished epoch's state
        for logger in self.trainer.loggers:
            logger.log_metrics(values, step=max(self.global_step - 1, 0))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_metrics.reset()
            self.val_loss.reset()
            return
        self.val_acc_best(self.val_metrics["acc"].compute())
        self._log_epoch("val", self.val_metrics)
        self.log(BEST_VAL_ACC, self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics)
        # How many test samples were scored in all processes (DDP: each sample exactly once).
        total = self.all_gather(torch.tensor(self._test_count, device=self.device)).sum()
        self.log("test/samples", total.float())
        self._test_count = 0
        self.test_confusion = self.confusion.compute().int().tolist()  # synced across processes
        self.confusion.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.setdefault("transferlab", {})  # callbacks add to it (`run.resume_repair`: rng)
        meta.update(backbone={"name": self.backbone.name}, strategy=self.strategy.state_dict())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("transferlab", {})
        if "strategy" in state:
            self.strategy.load_state_dict(state["strategy"])
        checkpoint.get("state_dict", {}).pop("first_loss", None)  # the divergence guard's, before it moved

    # ------------------------------------------------------------ optimizer
    def param_groups(self) -> list[dict[str, Any]]:
        """One group per backbone stage (lr scaled by the strategy; with layer decay, per timm layer) and
        one for the head, each split into decayed and non-decayed parameters by timm's rule (biases, norms
        and the model's `no_weight_decay()`): the strategy's `param_groups`."""
        base_lr, weight_decay = _optimizer_defaults(self.optimizer_factory)
        return self.strategy.param_groups(self.backbone, self.head, base_lr, weight_decay)

    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        self.param_group_record = describe_groups(groups)  # before a schedule changes the rates
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.planned_steps())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def planned_steps(self) -> int:
        """Optimizer steps the fit will take. Not `trainer.estimated_stepping_batches`: it builds the train
        loader before a checkpoint's loop state is restored, which breaks mid-epoch resume (Lightning #20550)."""
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        loader = trainer.datamodule.train_dataloader()
        if isinstance(loader, CombinedLoader):
            iter(loader)  # a CombinedLoader knows its length (by its mode) once iterated
        batches = len(loader)
        limit = trainer.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        if trainer.fast_dev_run:
            batches = min(batches, int(trainer.fast_dev_run))
            return math.ceil(batches / trainer.accumulate_grad_batches)
        return math.ceil(batches / trainer.accumulate_grad_batches) * max(int(trainer.max_epochs or 1), 1)


def _default_optimizer(params: list[dict[str, Any]]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)


def _optimizer_defaults(factory: Callable[..., Any]) -> tuple[float, float]:
    keywords = getattr(factory, "keywords", {}) or {}
    return float(keywords.get("lr", 1e-3)), float(keywords.get("weight_decay", 0.01))


def describe_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What results.json records of the optimizer's groups: name, lr, weight_decay, parameter names."""
    return [
        {
            "name": g["name"],
            "lr": g["lr"],
            "weight_decay": g["weight_decay"],
            "params": list(g["param_names"]),
        }
        for g in groups
    ]
