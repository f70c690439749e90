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
def test_image_size_too_small(name, size):
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


def test_stages_cli(capsys):
    stages_main(["backbone=resnet18"])
    out = capsys.readouterr().out
    assert "layer4" in out and "8,393,728" in out and "5 stages" in out


def test_weights_file_loads_and_is_hashed(tmp_path):
    source = create_backbone("test_resnet", image_size=32)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    loaded = create_backbone("test_resnet", pretrained=str(path), image_size=32)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(source.eval()(x), loaded.eval()(x))
    assert loaded.weights["source"] == "file" and len(loaded.weights["sha256"]) == 64
