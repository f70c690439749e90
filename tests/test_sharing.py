"""Parameter sharing: hard (multitask) and soft (L2-SP, DELTA, BSS), and forgetting, on the real stack."""

from __future__ import annotations

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from transferlab.core.errors import instantiate
from transferlab.module import TransferModule
from transferlab.run.build import build_regularizer as _build_regularizer
from transferlab.run.job import train
from transferlab.strategies import build_strategy
from transferlab.strategies.regularizers import BSS

TINY = ["dataset.classes=[0,1,2]", "dataset.batch_size=32", "trainer.num_sanity_val_steps=0"]


def fitted(cfg, epochs: int = 2) -> tuple[TransferModule, dict[str, torch.Tensor], list[float]]:
    """A module fitted with a real Trainer; returns it, its starting backbone weights, and train/reg per step."""
    pl.seed_everything(0)
    backbone = instantiate(cfg.backbone, _convert_="all")
    dm = instantiate(cfg.dataset, data_config=backbone.data_config, _convert_="all")
    dm.setup()
    module = TransferModule(
        backbone, build_strategy(cfg.strategy), num_classes=dm.num_classes,
        optimizer=instantiate(cfg.optimizer), regularizer=_build_regularizer(cfg),
    )  # fmt: skip
    start = {k: v.detach().clone() for k, v in module.backbone.model.state_dict().items()}
    penalties: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if "train/reg" in trainer.callback_metrics:
                penalties.append(float(trainer.callback_metrics["train/reg"]))

    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Record()],
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return module, start, penalties


def distance_from_start(module: TransferModule, start: dict[str, torch.Tensor]) -> float:
    now = module.backbone.model.state_dict()
    return sum(float(((now[k] - v) ** 2).sum()) for k, v in start.items() if v.is_floating_point()) ** 0.5


def test_l2_sp_with_a_large_alpha_keeps_the_backbone_at_its_start(make_cfg):
    free, start_free, _ = fitted(make_cfg(*TINY, "optimizer.lr=0.01"))
    held, start_held, penalties = fitted(
        make_cfg(
            *TINY, "optimizer.lr=0.01", "regularizer=l2_sp", "regularizer.alpha=1000", "regularizer.beta=0"
        )
    )
    moved, stayed = distance_from_start(free, start_free), distance_from_start(held, start_held)
    assert moved > 10 * stayed, (moved, stayed)
    assert penalties[0] == 0.0 and max(penalties[1:]) > 0.0  # zero at the start point, positive after


def test_delta_is_zero_at_the_start_and_positive_later(make_cfg):
    module, _, penalties = fitted(make_cfg(*TINY, "regularizer=delta", "regularizer.beta=0"))
    assert penalties[0] == pytest.approx(0.0, abs=1e-12) and max(penalties[1:]) > 0.0
    attention = module.regularizer.attention_0
    assert attention.sum() == pytest.approx(1.0) and attention.std() > 0  # measured, not uniform
    assert not any(p.requires_grad for p in module.regularizer.start.parameters())  # the frozen start


def smallest_singular_value(module: TransferModule, cfg) -> float:
    dm = instantiate(cfg.dataset, data_config=module.backbone.data_config, _convert_="all")
    dm.setup()
    x, _ = next(iter(dm.eval_dataloader("train")))
    module.eval()
    with torch.no_grad():
        return float(torch.linalg.svdvals(module.backbone(x))[-1])


def test_bss_shrinks_the_smallest_singular_values(make_cfg):
    plain_cfg = make_cfg(*TINY, "optimizer.lr=0.005")
    bss_cfg = make_cfg(
        *TINY, "optimizer.lr=0.005", "regularizer=bss", "regularizer.eta=10", "regularizer.k=8"
    )
    plain = smallest_singular_value(fitted(plain_cfg, epochs=3)[0], plain_cfg)
    shrunk = smallest_singular_value(fitted(bss_cfg, epochs=3)[0], bss_cfg)
    assert shrunk < 0.5 * plain, (shrunk, plain)
    assert BSS(k=1).penalty(None, None, torch.eye(3) * torch.tensor([3.0, 2.0, 0.5])) == pytest.approx(
        0.001 * 0.25
    )


def test_multitask_trains_both_heads_on_batches_of_both_tasks(make_cfg, tmp_path):
    record = train(
        make_cfg(
            "dataset=digits_target",
            "strategy=multitask",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1",
        )
    )
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["source/acc"] > 0.4  # the source head (digits 0-4) beats chance (0.2)
    log = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    steps = log.dropna(subset=["train/loss"])
    assert len(steps) > 0 and steps["train/source_loss"].notna().all()  # every step saw a source batch too
    assert set(log.dropna(subset=["train/source_acc"])["epoch"]) == {0, 1}
    assert record["trainable_params"] > record["strategy_details"]["trainable_backbone_params"]  # + 2 heads
    assert record["export"]["source_dataset"] == "digits_target"  # the target task is the exported model


def test_forgetting_is_measured_when_the_backbone_came_from_a_source_run(make_cfg, tmp_path):
    source = train(make_cfg("dataset=digits_source", "trainer.max_epochs=2", out=tmp_path / "source"))
    assert source["status"] == "ok" and (tmp_path / "source" / "head.safetensors").is_file()
    record = train(
        make_cfg(
            "dataset=digits_target",
            "trainer.max_epochs=2",
            "optimizer.lr=0.01",
            f"backbone.pretrained={tmp_path / 'source'}",
        )
    )
    assert record["status"] == "ok", record["error"]
    metrics = record["metrics"]
    assert metrics["source/acc_before"] == pytest.approx(
        source["metrics"]["test/acc"]
    )  # same head, same split
    assert metrics["source/acc_after"] < metrics["source/acc_before"]  # full fine-tuning forgets
    scratch = train(make_cfg("dataset=digits_target", "trainer.max_epochs=1", out=tmp_path / "scratch"))
    assert "source/acc_before" not in scratch["metrics"]  # no source task known


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["strategy=linear_probe", "regularizer=l2_sp"], "trains none of them (nothing to regularize)"),
        (["strategy=linear_probe", "regularizer=bss"], "regularizer=bss regularizes backbone weights"),
        (["strategy=multitask", "source.dataset=null"], "source.dataset is not set"),
        (["strategy=multitask", "source.dataset=nope"], "source.dataset=nope"),
        (
            ["strategy=multitask", "source.dataset_overrides=['dataset.image_size=16']"],
            "set source.dataset_overrides=['dataset.image_size=32']",
        ),
    ],
)
def test_sharing_mistakes_are_refused_with_the_fix(make_cfg, overrides, message):
    record = train(make_cfg(*TINY, *overrides))
    assert record["status"] == "failed" and message in record["error"], record["error"]
    assert "\n" not in record["error"] and record["train_seconds"] is None
