"""Parameter groups follow timm: no weight decay where timm's recipes have none (a ViT's position
embedding, class token, norms, biases), layer-wise lr decay with timm's own layers and scales, and the
recipe recorded in results.json."""

from __future__ import annotations

import pytest
from timm.optim import param_groups_layer_decay

from transferlab.core.errors import instantiate
from transferlab.module import TransferModule
from transferlab.run.job import train
from transferlab.strategies import build_strategy

VIT = ["backbone=vit_tiny", "backbone.name=test_vit", "dataset.image_size=32"]


def groups_of(cfg):
    strategy = build_strategy(cfg.strategy)
    backbone = instantiate(cfg.backbone, _convert_="all")
    module = TransferModule(backbone, strategy, num_classes=3, optimizer=instantiate(cfg.optimizer))
    return module, module.param_groups()


def test_a_vits_position_embedding_class_token_norms_and_biases_get_no_weight_decay(make_cfg):
    module, groups = groups_of(make_cfg(*VIT, "strategy=full", "optimizer.weight_decay=0.05"))
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert decay["pos_embed"] == 0.0 and decay["cls_token"] == 0.0
    norms_and_biases = [n for n in decay if n.endswith(".bias") or ".norm" in n or n.startswith("norm")]
    assert norms_and_biases and all(decay[n] == 0.0 for n in norms_and_biases)
    weights = [n for n in decay if n.endswith(("qkv.weight", "fc1.weight", "proj.weight"))]
    assert weights and all(decay[n] == 0.05 for n in weights)
    assert decay["head.1.weight"] == 0.05 and decay["head.1.bias"] == 0.0
    every = {id(p) for p in module.backbone.parameters()} | {id(p) for p in module.head.parameters()}
    assert {id(p) for g in groups for p in g["params"]} == every  # nothing lost, nothing twice
    assert sum(len(g["params"]) for g in groups) == len(every)


def test_layer_decayed_rates_equal_timms(make_cfg):
    lr, decay = 0.01, 0.7
    module, groups = groups_of(
        make_cfg(*VIT, "strategy=full", f"strategy.layer_decay={decay}", f"optimizer.lr={lr}")
    )
    ours = {n: g["lr"] for g in groups for n in g["param_names"] if not n.startswith("head.")}
    model = module.backbone.model
    names = {id(p): n for n, p in model.named_parameters()}
    theirs = {
        names[id(p)]: lr * g["lr_scale"]
        for g in param_groups_layer_decay(
            model, layer_decay=decay, no_weight_decay_list=model.no_weight_decay()
        )
        for p in g["params"]
    }
    assert ours.keys() == theirs.keys()
    assert all(ours[n] == pytest.approx(theirs[n]) for n in ours)
    assert len(set(ours.values())) > 3  # the blocks really get different rates
    assert {n: g["lr"] for g in groups for n in g["param_names"]}["head.1.weight"] == pytest.approx(lr)


def test_results_record_the_groups(make_cfg):
    record = train(
        make_cfg(
            "dataset.classes=[0,1,2]",
            "dataset.samples_per_class=10",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "strategy=partial",
            "strategy.trainable_stages=1",
        )
    )
    assert record["status"] == "ok", record["error"]
    groups = record["param_groups"]
    assert {g["name"] for g in groups} >= {"head", "head.no_decay"}
    assert all({"name", "lr", "weight_decay", "params"} <= set(g) for g in groups)
    assert all(g["weight_decay"] == 0.0 for g in groups if g["name"].endswith("no_decay"))
    trained = [n for g in groups for n in g["params"]]
    assert len(trained) == len(set(trained))
