"""Backbones by name: stages, feature sizes, weights, and clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from transferlab.backbones import create_backbone
from transferlab.core.errors import TransferlabError
from transferlab.stages import main as stages_main


def test_resnet18_stages_follow_timm_groups():
    bb = create_backbone("resnet18", image_size=32)
    assert [s.name for s in bb.stages] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert bb.num_features == 512
    assert bb.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    staged = {id(p) for ps in bb.stage_parameters() for p in ps}
    assert staged == {id(p) for p in bb.parameters()}  # every parameter in exactly one stage


def test_simple_cnn_declares_stages():
    bb = create_backbone("simple_cnn", image_size=16)
    assert [s.name for s in bb.stages] == ["stem", "conv2", "fc"]
    assert bb.num_features == 128
    assert bb(torch.zeros(3, 3, 16, 16)).shape == (3, 128)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(TransferlabError, match=r"Unknown backbone 'resnet1'.*Did you mean .*resnet18"):
        create_backbone("resnet1")


@pytest.mark.parametrize("name,size", [("simple_cnn", 2), ("vit_tiny_patch16_224", 8)])
def test_image_size_too_small(name, size, one_thread):
    kwargs = {"img_size": size} if "vit" in name else {}
    with pytest.raises(TransferlabError, match=rf"image_size={size} is too small"):
        create_backbone(name, image_size=size, kwargs=kwargs)


def test_pretrained_true_offline_says_how_to_use_a_local_file(tmp_path, monkeypatch):
    # The download boundary fails for real: the hub is offline and its cache is empty.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(TransferlabError, match=r"backbone.pretrained=/path/to/resnet18.safetensors"):
        create_backbone("resnet18", pretrained=True, image_size=32)


def test_stages_cli(capsys, one_thread):
    stages_main(["backbone=resnet18", "dataset.image_size=32"])
    out = capsys.readouterr().out
    assert "layer4" in out and "8,393,728" in out and "5 stages" in out
    # resnet18 at 32 px: layer4 holds 75.1% of the parameters, and 22.7% of the FLOPs
    assert "75.1" in out and "22.7" in out and "group_matcher" in out


def test_stage_flop_shares_add_up_and_follow_the_stages():
    from transferlab.backbones.profile import stage_shares

    vit = create_backbone("test_vit", image_size=32, kwargs={"img_size": 32})
    shares = stage_shares(vit, 32)
    assert sum(s["flop_share"] for s in shares) == pytest.approx(1.0)
    assert sum(s["param_share"] for s in shares) == pytest.approx(1.0)
    blocks = [s["flops"] for s in shares[1:]]
    assert len(set(blocks)) == 1 and blocks[0] > 0  # identical transformer blocks: identical FLOPs


def test_weights_file_loads_and_is_hashed(tmp_path):
    source = create_backbone("test_resnet", image_size=32)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    loaded = create_backbone("test_resnet", pretrained=str(path), image_size=32)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(source.eval()(x), loaded.eval()(x))
    assert loaded.weights["source"] == "file" and len(loaded.weights["sha256"]) == 64


def _stage_invariants(bb):
    """Every parameter in exactly one stage, names unique, no stage made only of norms or scalars."""
    from transferlab.backbones.stages import has_weights

    names = [s.name for s in bb.stages]
    assert len(set(names)) == len(names), names
    staged = [n for s in bb.stages for n in s.param_names]
    assert sorted(staged) == sorted(n for n, _ in bb.model.named_parameters())
    assert all(has_weights(bb.model, list(s.param_names)) for s in bb.stages)


def test_stages_without_group_matcher_come_from_feature_info(caplog, one_thread):
    caplog.set_level("INFO", logger="transferlab.backbones.factory")
    bb = create_backbone("pit_ti_224", image_size=32, kwargs={"img_size": 32, "depth": (1, 1, 1)})
    assert not hasattr(bb.model, "group_matcher")  # PiT, like every MetaFormer, has none
    assert bb.stage_source == "feature_info" and "from timm's feature_info" in caplog.text
    assert [s.name for s in bb.stages] == [
        "stem",
        "transformers.0.blocks.0",
        "transformers.1",
        "transformers.2+norm",
    ]
    assert "pos_embed" in bb.stages[0].param_names  # the model's own tables belong to the stem
    _stage_invariants(bb)


def test_stages_fall_back_to_top_level_children():
    import timm

    from transferlab.backbones.stages import timm_stages

    model = timm.create_model("pit_ti_224", num_classes=0, img_size=32, depth=(1, 1, 1))
    del model.feature_info  # a model with neither group_matcher nor feature_info
    stages, source = timm_stages(model)
    assert source == "top-level children"
    assert [s.name for s in stages] == [
        "stem",
        "transformers.0.blocks.0",
        "transformers.1",
        "transformers.2+norm",
    ]
    assert stages[0].param_names[:2] == ("pos_embed", "cls_token")


def test_norm_only_groups_join_their_neighbour_and_names_are_unique(one_thread):
    convnext = create_backbone("test_convnext", image_size=32)
    assert convnext.stages[-1].param_names[-1] == "head.norm.bias"  # timm's last group is just head.norm
    assert [s.name for s in convnext.stages][-1] == "stages.3+head.norm"
    _stage_invariants(convnext)
    densenet = create_backbone(
        "densenet121", image_size=32, kwargs={"growth_rate": 8, "block_config": (1, 1, 1, 1)}
    )
    assert [s.name for s in densenet.stages] == [
        "features.conv0+norm0",
        "features.denseblock1+transition1",
        "features.denseblock2+transition2",
        "features.denseblock3+transition3",
        "features.denseblock4+norm5",
    ]  # all five were called "features"
    _stage_invariants(densenet)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "test_maxvit", "levit_128s"])
def test_fixed_size_models_name_the_override_that_works(make_cfg, name, one_thread):
    import re

    from transferlab.core.errors import instantiate

    common = [f"backbone.name={name}", "dataset.image_size=32"]
    with pytest.raises(TransferlabError, match=r"does not fit .* it is built for \d+ px") as error:
        instantiate(make_cfg(*common).backbone, _convert_="all")
    override = re.search(r"\+backbone\.kwargs\.img_size=\d+", str(error.value)).group(0)
    assert override == "+backbone.kwargs.img_size=32"
    backbone = instantiate(make_cfg(*common, override).backbone, _convert_="all")  # the advice, as given
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, backbone.num_features)
