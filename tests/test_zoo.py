"""The zoo: every strategy on one small model per timm family (tests/zoo_families.py), two real
Lightning steps each, in one process with each family's model built once. TRANSFERLAB_ZOO=all adds
the families left out of the default run for its budget (~60 s of CPU)."""

from __future__ import annotations

import copy
import os

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from tests.test_backbones import _stage_invariants
from tests.zoo_families import ZOO
from transferlab.backbones import create_backbone
from transferlab.backbones.weights import export_backbone
from transferlab.module import TransferModule
from transferlab.strategies import LPFT, BitFit, Full, GradualUnfreeze, LinearProbe, LoRA, Partial
from transferlab.strategies.export import features_of, mismatch, probe_batch

pytestmark = pytest.mark.slow

# name -> (strategy, epochs, batches per epoch): two optimizer steps each. Gated strategies take one
# step per epoch, so their second step runs with frozen (eval-mode) parts after a first one.
PLAN = {
    "full": (Full, 1, 2),
    "partial": (lambda: Partial(trainable_stages=1), 1, 2),
    "linear_probe": (lambda: LinearProbe(head_solver="sgd"), 1, 2),
    "bitfit": (BitFit, 1, 2),
    "lora": (lambda: LoRA(rank=2), 1, 2),
    "gradual_unfreeze": (GradualUnfreeze, 2, 1),
    "lp_ft": (lambda: LPFT(probe_epochs=2), 2, 1),
}
ROUND_TRIP = ("full", "lora")  # exported to a file and loaded into a fresh model
FAMILIES = [f for f in ZOO if not f.heavy or os.environ.get("TRANSFERLAB_ZOO") == "all"]


def _fit(backbone, strategy, loader, epochs: int, batches: int) -> TransferModule:
    module = TransferModule(backbone, strategy, num_classes=3)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    assert trainer.state.status == "finished" and trainer.global_step == 2, strategy.name
    return module


def _linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def _round_trip(family, module, directory) -> None:
    exported = module.strategy.export_model(module.backbone)  # checked there against the trained network
    export_backbone(exported, directory, {"architecture": family.model})
    fresh = create_backbone(
        family.model, pretrained=str(directory), image_size=family.size, kwargs=family.kwargs
    )
    x = probe_batch(module.backbone)
    diff, allowed = mismatch(features_of(module.backbone.model, x), features_of(fresh.model, x))
    assert diff <= allowed, (module.strategy.name, diff)


@pytest.mark.parametrize("family", FAMILIES, ids=[f.module for f in FAMILIES])
def test_every_strategy_on_one_model_per_family(family, tmp_path, one_thread):
    torch.manual_seed(0)
    base = create_backbone(family.model, image_size=family.size, kwargs=family.kwargs)
    _stage_invariants(base)
    data = torch.utils.data.TensorDataset(
        torch.randn(4, 3, family.size, family.size), torch.tensor([0, 1, 2, 0])
    )
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    initial = {k: v.clone() for k, v in base.state_dict().items()}
    trainable = {}
    for name, (make, epochs, batches) in PLAN.items():
        base.load_state_dict(initial)  # the same start for every strategy; LoRA changes the model: a copy
        backbone = copy.deepcopy(base) if name == "lora" else base
        linear_before = {n: w.detach().clone() for n, w in _linear_weights(backbone.model).items()}
        module = _fit(backbone, make(), loader, epochs, batches)
        trainable[name] = module.parameter_counts()[0]
        if name in ROUND_TRIP:
            _round_trip(family, module, tmp_path / name)
        else:
            module.strategy.export_model(module.backbone)  # raises unless it reproduces the features
        if name == "bitfit":  # biases and norms only: no conv or linear weight trains or changes
            after = _linear_weights(module.backbone.model)
            assert not any(w.requires_grad for w in after.values())
            assert all(torch.equal(linear_before[n], w) for n, w in after.items())
    assert trainable["linear_probe"] < trainable["partial"] < trainable["full"], trainable


def test_a_backbone_without_group_matcher_runs_a_whole_job(make_cfg, one_thread):
    """The report's case: `strategy=full` on a MetaFormer failed with "could not be built from its config"."""
    from transferlab.run.job import train

    cfg = make_cfg(
        "backbone.name=poolformer_s12",
        "dataset.image_size=32",
        "dataset.classes=[0,1,2]",
        "strategy=full",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    )
    record = train(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["strategy_details"]["stages"][0]["name"] == "stem.conv"
    assert record["export"]["sha256"]  # exported after its check against the trained network
