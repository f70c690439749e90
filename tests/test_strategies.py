"""Each strategy after a short real fit: what changed, what did not, optimizer groups, schedules."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from transferlab.core.errors import TransferlabError, instantiate
from transferlab.data.features import CachedFeatures
from transferlab.module import TransferModule
from transferlab.run.job import train
from transferlab.strategies import build_strategy

RESNET = [
    "backbone=resnet18",
    "backbone.name=test_resnet",
    "dataset.image_size=32",
    "dataset.classes=[0,1,2]",
]
VIT = ["backbone=vit_tiny", "backbone.name=test_vit", "dataset.image_size=32", "dataset.classes=[0,1,2]"]


def build(cfg):
    strategy = build_strategy(cfg.strategy)
    backbone = instantiate(cfg.backbone, _convert_="all")
    dm = instantiate(cfg.dataset, data_config=backbone.data_config, _convert_="all")
    dm.setup()
    module = TransferModule(
        backbone,
        strategy,
        num_classes=dm.num_classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
    )
    return module, dm


def quiet_trainer(**kwargs) -> pl.Trainer:
    """A real CPU Trainer without logging, checkpoints or progress output."""
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def fit(cfg, epochs=1, batches=4):
    module, dm = build(cfg)
    before = {k: v.detach().clone() for k, v in module.backbone.state_dict().items()}
    head_before = {k: v.detach().clone() for k, v in module.head.state_dict().items()}
    trainer = quiet_trainer(
        max_epochs=epochs, limit_train_batches=batches, limit_val_batches=1, num_sanity_val_steps=0
    )
    trainer.fit(module, datamodule=dm)
    after = module.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    head_changed = any(not torch.equal(v, module.head.state_dict()[k]) for k, v in head_before.items())
    return module, changed, set(before), head_changed


def stage_keys(module, index):
    prefixes = {n.rsplit(".", 1)[0] for n in module.backbone.stages[index].param_names}
    return prefixes


def in_stages(key, module, indices):
    key = key.removeprefix("model.")
    return any(key.rsplit(".", 1)[0] in stage_keys(module, i) for i in indices)


def test_linear_probe_freezes_everything_and_bn_statistics(make_cfg):
    module, changed, keys, head_changed = fit(make_cfg(*RESNET, "strategy=linear_probe"))
    assert head_changed
    assert changed == set()  # weights AND BatchNorm running statistics bit-identical
    assert all(not m.training for m in module.backbone.modules())
    groups = module.trainer.optimizers[0].param_groups
    assert [g["name"] for g in groups] == ["head", "head.no_decay"]


def test_partial_trains_last_k_stages(make_cfg):
    module, changed, keys, head_changed = fit(
        make_cfg(*RESNET, "strategy=partial", "strategy.trainable_stages=2")
    )
    n = len(module.backbone.stages)
    frozen, trainable = range(n - 2), range(n - 2, n)
    assert head_changed
    assert not {k for k in changed if in_stages(k, module, frozen)}  # incl. running_mean/var of frozen BN
    assert any(k.endswith("running_mean") for k in changed if in_stages(k, module, trainable))
    assert {k for k in keys if in_stages(k, module, trainable) and k.endswith("weight")} <= changed
    optimized = {id(p) for g in module.trainer.optimizers[0].param_groups for p in g["params"]}
    frozen_params = [p for i in frozen for p in module.backbone.stage_parameters()[i]]
    assert not any(id(p) in optimized for p in frozen_params)  # optimizer holds trainable parameters only


def test_partial_with_too_many_stages_lists_them(make_cfg):
    module_cfg = make_cfg(*RESNET, "strategy=partial", "strategy.trainable_stages=9")
    with pytest.raises(TransferlabError, match=r"trainable_stages=9 .* 5 stages \(0:stem, 1:layer1.0"):
        build(module_cfg)


def test_full_with_layer_decay_sets_group_learning_rates(make_cfg):
    cfg = make_cfg(
        *RESNET,
        "strategy=full",
        "strategy.backbone_lr_mult=0.1",
        "strategy.layer_decay=0.5",
        "optimizer.lr=0.01",
        "scheduler=null",
    )
    module, changed, keys, head_changed = fit(cfg)
    lrs = {g["name"]: g["lr"] for g in module.trainer.optimizers[0].param_groups}
    names = [s.name for s in module.backbone.stages]
    for i, name in enumerate(names):
        assert lrs[f"backbone.{name}"] == pytest.approx(0.01 * 0.1 * 0.5 ** (len(names) - 1 - i))
    assert lrs["head"] == pytest.approx(0.01)
    assert all(in_stages(k, module, range(len(names))) for k in changed)
    assert {k for k in keys if k.endswith("weight")} <= changed


def test_scratch_ignores_pretrained_weights(make_cfg, tmp_path):
    from safetensors.torch import save_file

    source = instantiate(make_cfg(*RESNET).backbone, _convert_="all")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    record = train(
        make_cfg(*RESNET, "strategy=scratch", f"backbone.pretrained={path}", "trainer.limit_train_batches=2")
    )
    assert record["status"] == "ok", record["error"]
    assert record["weights"]["source"] == "random" and record["weights_sha256"] is None


def test_gradual_unfreeze_gates_stages_by_epoch(make_cfg):
    cfg = make_cfg(*RESNET, "strategy=gradual_unfreeze", "strategy.unfreeze_every=1")
    module, changed, keys, head_changed = fit(cfg, epochs=2, batches=3)
    n = len(module.backbone.stages)
    # epoch 0: head only; epoch 1: + last stage. Everything earlier is untouched, BN statistics included.
    assert not {k for k in changed if in_stages(k, module, range(n - 1))}
    assert {k for k in keys if in_stages(k, module, [n - 1]) and k.endswith("weight")} <= changed
    # Once unfrozen, a stage's BatchNorm layers train again (their running statistics move).
    assert any(k.endswith("running_mean") for k in changed if in_stages(k, module, [n - 1]))
    optimized = sum(len(g["params"]) for g in module.trainer.optimizers[0].param_groups)
    assert optimized == len(list(module.parameters()))  # everything registered from step 0


def test_gradual_unfreeze_resume_keeps_the_schedule(make_cfg, tmp_path):
    common = [
        *RESNET,
        "strategy=gradual_unfreeze",
        "strategy.unfreeze_every=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    ]
    full = train(make_cfg(*common, "trainer.max_epochs=3", out=tmp_path / "straight"))
    part = train(make_cfg(*common, "trainer.max_epochs=2", out=tmp_path / "resumed"))
    assert part["strategy_details"]["frozen_stages"] != full["strategy_details"]["frozen_stages"]
    resumed = train(make_cfg(*common, "trainer.max_epochs=3", "resume=true", out=tmp_path / "resumed"))
    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["strategy_details"]["frozen_stages"] == full["strategy_details"]["frozen_stages"]
    assert resumed["strategy_details"]["frozen_stages"] == ["stem", "layer1.0", "layer2.0"]


def test_lp_ft_probe_phase_keeps_backbone(make_cfg):
    cfg = make_cfg(*RESNET, "strategy=lp_ft", "strategy.probe_epochs=1")
    module, changed, keys, head_changed = fit(cfg, epochs=1)
    assert head_changed and changed == set()
    module, changed, keys, head_changed = fit(cfg, epochs=2, batches=3)
    assert {k for k in keys if k.endswith("weight")} <= changed


def test_bitfit_trains_only_biases_and_norms(make_cfg):
    module, changed, keys, head_changed = fit(make_cfg(*RESNET, "strategy=bitfit"))
    convs = {n + ".weight" for n, m in module.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert convs and not convs & changed
    norms = {n for n, m in module.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {f"{n}.weight" for n in norms} <= changed and {f"{n}.bias" for n in norms} <= changed


def test_lora_trains_only_adapters_and_head_and_merges_on_export(make_cfg):
    module, changed, keys, head_changed = fit(make_cfg(*VIT, "strategy=lora", "strategy.rank=4"))
    assert head_changed
    assert changed and all("lora_" in k for k in changed)
    trainable = {n for n, p in module.backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    merged = module.strategy.export_model(module.backbone)
    assert not any("lora" in k for k in merged.state_dict())
    x = torch.randn(2, 3, 32, 32)
    module.backbone.eval()
    assert torch.allclose(merged.eval()(x), module.backbone(x), atol=1e-5)


def test_feature_cache_hit_and_invalidation(make_cfg, tmp_path):
    cfg = make_cfg(*RESNET, "strategy=linear_probe")
    calls = []

    def run(perturb=False):
        pl.seed_everything(0)  # the same backbone weights each time
        module, dm = build(cfg)
        if perturb:
            with torch.no_grad():
                next(module.backbone.parameters()).add_(1.0)
        cached = CachedFeatures(dm, module.backbone, tmp_path / "features")
        cached.setup()
        module.use_cached_features = True
        count = [0]
        module.backbone.register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))
        quiet_trainer(max_epochs=2).fit(module, datamodule=cached)
        calls.append(count[0])
        return cached

    first = run()
    assert first.misses == ["train", "val", "test"]
    second = run()
    assert second.hits == ["train", "val", "test"] and calls[1] == 0  # backbone never ran
    third = run(perturb=True)
    assert third.misses == ["train", "val", "test"]  # new weights: stale cache not used


def test_lora_skips_depthwise_convolutions_and_explains_a_bad_target(make_cfg):
    effnet = [
        "backbone=efficientnet_b0",
        "backbone.name=test_efficientnet",
        "dataset.image_size=32",
        "dataset.classes=[0,1,2]",
        "strategy=lora",
        "strategy.rank=8",
    ]
    module, changed, keys, head_changed = fit(make_cfg(*effnet))
    assert changed and all("lora_" in k for k in changed)
    with pytest.raises(
        TransferlabError, match=r"conv_dw.* matches no Linear or ungrouped Conv2d layer.*depthwise"
    ):
        build(make_cfg(*effnet, "strategy.target_modules=[conv_dw]"))


def tiny_fit(backbone, strategy, epochs=2, batches=1):
    """A real fit of `epochs` x `batches` steps on random 32-pixel images (3 classes)."""
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    module = TransferModule(backbone, strategy, num_classes=3)
    trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    assert trainer.state.status == "finished"
    return module


@pytest.mark.parametrize(
    "name,kwargs",
    [("levit_128s", {"img_size": 32}), ("efficientvit_m0", {"img_size": 32}), ("tiny_vit_5m_224", {})],
)
@pytest.mark.parametrize("strategy", ["gradual_unfreeze", "lp_ft"])
def test_gated_strategies_on_models_that_cache_in_eval_mode(name, kwargs, strategy, one_thread):
    from transferlab.backbones import create_backbone
    from transferlab.strategies import LPFT, GradualUnfreeze

    torch.manual_seed(0)
    backbone = create_backbone(name, image_size=32, kwargs=kwargs)
    first = [p.detach().clone() for p in backbone.stage_parameters()[0]]
    # two steps with frozen parts in eval mode: the second backpropagated through the first's cache
    gated = GradualUnfreeze() if strategy == "gradual_unfreeze" else LPFT(probe_epochs=2)
    module = tiny_fit(backbone, gated)
    assert all(torch.equal(a, b) for a, b in zip(first, module.backbone.stage_parameters()[0], strict=True))


def test_lora_on_weight_standardized_convolutions_exports_the_trained_network(one_thread):
    from peft.tuners.lora import LoraLayer

    from transferlab.backbones import create_backbone
    from transferlab.strategies import LoRA

    torch.manual_seed(0)
    module = tiny_fit(create_backbone("test_nfnet", image_size=32), LoRA(rank=2), epochs=1, batches=2)
    assert module.strategy.weight_space_layers == 19  # every ScaledStdConv2d: W + BA inside the layer
    assert not any(isinstance(m, LoraLayer) and "conv" in n for n, m in module.backbone.named_modules())
    adapters = {n for n, p in module.backbone.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    merged = module.strategy.export_model(module.backbone)  # checked there; checked again from its state
    fresh = create_backbone("test_nfnet", image_size=32)
    fresh.model.load_state_dict(merged.state_dict())
    x = torch.randn(2, 3, 32, 32)
    module.backbone.eval()
    assert torch.allclose(fresh.eval()(x), module.backbone(x), atol=1e-5)


def test_an_export_that_differs_from_the_trained_network_fails_loudly(one_thread):
    from transferlab.backbones import create_backbone
    from transferlab.strategies import LoRA

    class PeftEverywhere(LoRA):  # the old behaviour: peft adapters on the weight-standardized convs too
        def resolve_targets(self, model):
            exact, weight_space = super().resolve_targets(model)
            return exact + weight_space, []

    backbone = create_backbone("test_nfnet", image_size=32)
    strategy = PeftEverywhere(rank=2, name="lora")  # a subclass without its own YAML names itself
    strategy.prepare(backbone)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter
    with pytest.raises(TransferlabError, match=r"strategy=lora does not reproduce the trained network: max"):
        strategy.export_model(backbone)


@pytest.mark.parametrize("fraction", [0.05, 0.3, 1.0])
def test_partial_trainable_fraction_picks_the_fewest_last_stages_holding_it(make_cfg, fraction):
    module, _ = build(make_cfg(*RESNET, "strategy=partial", f"strategy.trainable_fraction={fraction}"))
    sizes = [sum(p.numel() for p in ps) for ps in module.backbone.stage_parameters()]
    k, n = module.strategy.k, len(sizes)
    assert sum(sizes[n - k :]) >= fraction * sum(sizes) > sum(sizes[n - k + 1 :])
    trainable = sum(p.numel() for p in module.backbone.parameters() if p.requires_grad)
    assert trainable == sum(sizes[n - k :])
    assert module.strategy.config()["trainable_fraction"] == fraction


def test_partial_trainable_fraction_is_schema_checked(make_cfg):
    from transferlab.core import schema

    with pytest.raises(TransferlabError, match=r"strategy.trainable_fraction"):
        schema.check(make_cfg(*RESNET, "strategy=partial", "strategy.trainable_fraction=1.5"))


def test_lora_adapts_exactly_the_resolved_layers(one_thread):
    from peft.tuners.lora import LoraLayer

    from transferlab.backbones import create_backbone
    from transferlab.strategies import LoRA

    # SKNet: a stem `conv1` and blocks whose `conv1` is a SelectiveKernel (not a conv) with dilated
    # paths; peft matched the name list by suffix and could not adapt dilated convolutions.
    backbone = create_backbone("skresnet18", image_size=32)
    strategy = LoRA(rank=2)
    strategy.prepare(backbone)
    base = backbone.model.get_base_model()
    adapted = sorted(n for n, m in base.named_modules() if isinstance(m, LoraLayer))
    assert adapted == sorted(strategy.resolved_targets) and "conv1" in adapted
    assert strategy.weight_space_layers == 8  # the dilated path convolutions
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
    strategy.export_model(backbone)
