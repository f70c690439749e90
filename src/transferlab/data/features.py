"""On-disk caches of what a frozen part of the backbone computes: the features of a frozen backbone
(linear probe, k-NN) or the activations at the boundary of a frozen prefix (partial fine-tuning)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from transferlab.backbones import Backbone
from transferlab.backbones.weights import state_dict_sha256
from transferlab.core.atomic import atomic_open
from transferlab.data.datamodule import DataModule
from transferlab.data.loaders import make_loader, resume_position

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
CACHE_FORMAT = 1


class CachedFeatures(pl.LightningDataModule):
    """Serves (features, label) batches computed once by the frozen backbone (or by `compute`, e.g. a
    frozen prefix, named by `kind`).

    Each split's cache file is keyed by the backbone (name, kwargs, weights sha256), what is cached
    (`kind`), the split's file-list-and-contents hash and the evaluation transform, so a stale cache is
    never used. Each file carries a checksum: one damaged outside our atomic writes is rebuilt. A
    cache directory that cannot be written (read-only, full) only costs the caching, with a warning.
    """

    def __init__(
        self,
        datamodule: DataModule,
        backbone: Backbone,
        cache_dir: str | Path,
        device: str = "cpu",
        compute=None,
        kind: str = "features",
    ):
        super().__init__()
        self.datamodule = datamodule
        self.backbone = backbone
        self.cache_dir = Path(cache_dir)
        self.device = device
        self.compute = compute or backbone
        self.kind = kind
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits: list[str] = []
        self.misses: list[str] = []

    def key(self, split: str) -> str:
        dm = self.datamodule
        ident = {
            "format": CACHE_FORMAT,
            "backbone": self.backbone.name,
            "kwargs": self.backbone.kwargs,
            "weights": self._weights_sha256,
            "kind": self.kind,
            "split": split,
            "data": dm.split_hash(split),
            "classes": dm.class_names,
            "transform": repr(dm.transform(split, augment=False)),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        self.datamodule.setup()
        self._weights_sha256 = state_dict_sha256(self.backbone.model.state_dict())
        for split in SPLITS:
            self.tensors[split] = self._load_or_compute(split)

    def _load_or_compute(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.cache_dir / f"{split}-{self.key(split)}.pt"
        if path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                if data.get("sha256") != _checksum(data["features"], data["labels"]):
                    raise ValueError("checksum mismatch")
                self.hits.append(split)
                log.info("%s cache hit: %s (%s)", self.kind, split, path.name)
                return data["features"], data["labels"]
            except Exception as exc:
                log.warning(
                    "%s cache file %s is damaged (%s): computing it again.", self.kind, path, str(exc)[:80]
                )
        features, labels = self._compute(split)
        try:
            with atomic_open(path) as f:
                torch.save({"features": features, "labels": labels, "sha256": _checksum(features, labels)}, f)
        except OSError as exc:  # read-only or full: caching is an optimization, never a failure
            log.warning(
                "Cannot write the %s cache in %s (%s): continuing without it.",
                self.kind,
                self.cache_dir,
                exc.strerror or exc,
            )
        self.misses.append(split)
        log.info("%s cache miss: computed %s %s -> %s", self.kind, split, tuple(features.shape), path.name)
        return features, labels

    @torch.no_grad()
    def _compute(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        # Building the cache must not shift the run's random stream: hit and miss runs stay identical.
        with torch.random.fork_rng(devices=[]):
            return self._compute_features(split)

    def _compute_features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = self.backbone.training
        original = next(self.backbone.parameters()).device
        self.backbone.eval().to(self.device)
        features, labels = [], []
        try:
            for x, y in self.datamodule.eval_dataloader(split):
                features.append(self.compute(x.to(self.device)).float().cpu())
                labels.append(y)
            if not features:  # an empty split (no validation: a final run after tuning.cv_folds)
                x, y = next(iter(self.datamodule.eval_dataloader("train")))
                features.append(self.compute(x[:1].to(self.device)).float().cpu()[:0])
                labels.append(torch.as_tensor(y)[:0])
        finally:
            self.backbone.train(was_training).to(original)
        return torch.cat(features), torch.cat(labels)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        features, labels = self.tensors[split]
        dm = self.datamodule
        batch_size = dm.batch_size if split == "train" else dm.eval_batch_size
        return make_loader(
            TensorDataset(features, labels),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=dm.seed,
            position=resume_position(self.trainer) if shuffle else (0, 0),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _checksum(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()
