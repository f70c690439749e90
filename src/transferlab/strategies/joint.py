"""Hard parameter sharing (`strategy=multitask`): the source task's data beside the target's
(`build_source_datamodule`, `JointDataModule`) and a module with a head per task on one shared backbone
(`MultiTaskModule`). The `MultiTask` strategy's hooks build them."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from pytorch_lightning.utilities import CombinedLoader
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from transferlab.backbones import Backbone
from transferlab.core.config import compose_dataset
from transferlab.core.errors import TransferlabError, instantiate
from transferlab.module import TransferModule
from transferlab.strategies.param_groups import head_groups


def build_source_datamodule(cfg: DictConfig, backbone: Backbone, target: Any):
    """The source task's data for joint training, checked against what the backbone gets."""
    source = cfg.get("source") or {}
    name = source.get("dataset")
    if not name:
        raise TransferlabError(
            f"strategy={cfg.strategy.name} trains on a source task too, but source.dataset is not set; "
            "add source.dataset=digits_source (a dataset config name; source.dataset_overrides for its settings)."
        )
    try:
        node = compose_dataset(cfg, str(name), list(source.get("dataset_overrides") or []))
    except Exception as exc:  # an unknown dataset name: Hydra lists the options
        raise TransferlabError(f"source.dataset={name}: {str(exc).splitlines()[0]}") from None
    if int(node.image_size) != target.image_size:
        raise TransferlabError(
            f"source.dataset={name} has image_size {node.image_size}, but the shared backbone gets "
            f"{target.image_size}x{target.image_size} images (dataset.image_size); set "
            f"source.dataset_overrides=['dataset.image_size={target.image_size}']."
        )
    in_chans = int(backbone.kwargs.get("in_chans", 3))
    if in_chans != 3:
        raise TransferlabError(
            f"backbone in_chans={in_chans}, but source.dataset={name} yields RGB images (3 channels); "
            "use backbone.in_chans=3."
        )
    with open_dict(node):
        node.pop("search_space", None)
    datamodule = instantiate(node, data_config=backbone.data_config, _convert_="all")
    datamodule.setup("fit")
    return datamodule


class JointDataModule(pl.LightningDataModule):
    """Training batches of both tasks at once ({"target": batch, "source": batch}, Lightning's
    `CombinedLoader` in `mode`); validation and test are the target's."""

    def __init__(self, target: Any, source: Any, mode: str):
        super().__init__()
        self.target, self.source, self.mode = target, source, mode

    def train_dataloader(self) -> CombinedLoader:
        for part in (self.target, self.source):
            part.trainer = self.trainer  # so a resumed epoch continues where the checkpoint was
        loaders = {"target": self.target.train_dataloader(), "source": self.source.train_dataloader()}
        return CombinedLoader(loaders, mode=self.mode)

    def val_dataloader(self):
        return self.target.val_dataloader()

    def eval_dataloader(self, split: str):
        return self.target.eval_dataloader(split)

    def test_dataloader(self):
        return self.target.test_dataloader()


class MultiTaskModule(TransferModule):
    """`TransferModule` with a second head for the source task; each step's loss is the target loss plus
    the strategy's (scheduled) source weight times the source loss."""

    def __init__(self, backbone: Backbone, strategy: Any, source_classes: int, **kwargs: Any):
        super().__init__(backbone, strategy, **kwargs)
        dropout = float(kwargs.get("head_dropout", 0.0))
        self.source_head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(backbone.num_features, source_classes)
        )
        self.source_train_acc = MulticlassAccuracy(source_classes, average="micro")
        self.source_train_acc.persistent(True)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        out = super().training_step(batch["target"], batch_idx)
        x, y = batch["source"]
        logits = self.source_head(self.backbone(x))
        source_loss = self.criterion(logits, y)
        self.source_train_acc.update(logits.detach(), y)
        weight = self.strategy.source_weight_at(self.global_step / max(self.planned_steps() - 1, 1))
        self.log("train/source_loss", source_loss, on_step=True, on_epoch=False, batch_size=len(y))
        self.log("train/source_weight", weight, on_step=True, on_epoch=False, batch_size=len(y))
        return {**out, "loss": out["loss"] + weight * source_loss}

    def extra_epoch_metrics(self) -> dict[str, float]:
        value = float(self.source_train_acc.compute())
        self.source_train_acc.reset()
        return {"train/source_acc": value}

    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        head = next(g for g in groups if g["name"] == "head")
        return [
            *groups,
            *head_groups(self.source_head, "source_head", head["lr"], head["weight_decay"]),
        ]

    def parameter_counts(self) -> tuple[int, int]:
        trainable, total = super().parameter_counts()
        extra = sum(p.numel() for p in self.source_head.parameters())
        return trainable + extra, total + extra
