"""Pretrained weights: local files, run directories, exports, mismatches, source pretraining."""

from __future__ import annotations

import json
import logging

import pytest
import timm
import torch
from safetensors.torch import save_file

from transferlab.backbones import create_backbone
from transferlab.backbones.weights import export_backbone, file_sha256
from transferlab.core.errors import TransferlabError, instantiate
from transferlab.run.job import train
from transferlab.run.pretrain import ensure_source

X = torch.randn(2, 3, 32, 32)


def features(backbone):
    backbone.eval()
    with torch.no_grad():
        return backbone(X)


def test_export_then_load_gives_identical_features(tmp_path):
    source = create_backbone("test_resnet", image_size=32)
    meta = export_backbone(source.model, tmp_path / "run", {"architecture": "test_resnet"})
    assert meta["sha256"] == file_sha256(tmp_path / "run" / "backbone.safetensors")
    loaded = create_backbone("test_resnet", pretrained=str(tmp_path / "run"), image_size=32)
    assert torch.equal(features(source), features(loaded))
    assert loaded.weights["sha256"] == meta["sha256"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_checkpoint_with_classifier_loads_from_a_local_file(tmp_path, suffix, caplog):
    model = timm.create_model("test_resnet", num_classes=7)  # a full timm model, classifier included
    path = tmp_path / f"test_resnet{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    with caplog.at_level(logging.WARNING):
        loaded = create_backbone("test_resnet", pretrained=str(path), image_size=32)
    assert "Dropped the classifier" in caplog.text and "fresh head" in caplog.text
    model.reset_classifier(0)
    assert torch.equal(features(loaded), model.eval()(X))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": object()}, path)
    with pytest.raises(TransferlabError, match=r"cannot read weights"):
        create_backbone("test_resnet", pretrained=str(path), image_size=32)


def test_architecture_mismatch_names_both(tmp_path):
    source = create_backbone("test_resnet", image_size=32)
    export_backbone(source.model, tmp_path / "run", {"architecture": "test_resnet"})
    with pytest.raises(
        TransferlabError, match=r"holds weights of 'test_resnet', but backbone.name is 'resnet18'"
    ):
        create_backbone("resnet18", pretrained=str(tmp_path / "run"), image_size=32)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(bare))
    with pytest.raises(TransferlabError, match=r"do not fit backbone 'test_efficientnet'.*missing keys"):
        create_backbone("test_efficientnet", pretrained=str(bare), image_size=32)


def test_missing_weights_file_is_clear(tmp_path):
    with pytest.raises(TransferlabError, match=r"no such file or directory"):
        create_backbone("test_resnet", pretrained=str(tmp_path / "nope.safetensors"))


TARGET = ["experiment=digits_transfer", "trainer.max_epochs=2", "source.overrides=['trainer.max_epochs=2']"]


def test_source_pretraining_is_cached_and_transferred(make_cfg, tmp_path, caplog):
    cfg = make_cfg(*TARGET)
    first = ensure_source(cfg, run=train)
    assert first["reused"] is False
    export = json.loads(open(f"{first['run_dir']}/backbone.json").read())
    assert export["architecture"] == "simple_cnn" and export["source_classes"] == ["0", "1", "2", "3", "4"]
    with caplog.at_level(logging.INFO):
        again = ensure_source(make_cfg(*TARGET), run=train)
    assert again["reused"] is True and again["run_dir"] == first["run_dir"]
    assert "Reusing source pretraining digits_source" in caplog.text
    changed = ensure_source(make_cfg(*TARGET[:2], "source.overrides=['trainer.max_epochs=1']"), run=train)
    assert changed["run_dir"] != first["run_dir"]  # a different source config is a different cache entry

    # The target starts from the source weights: features before training equal the source model's.
    source_backbone = create_backbone("simple_cnn", pretrained=first["run_dir"], image_size=32)
    target_backbone = instantiate(cfg.backbone, pretrained=first["run_dir"], _convert_="all")
    assert torch.equal(features(source_backbone), features(target_backbone))

    record = train(make_cfg(*TARGET))
    assert record["status"] == "ok", record["error"]
    assert record["source"]["reused"] is True
    assert (
        record["weights_sha256"]
        == export["sha256"]
        == file_sha256(f"{first['run_dir']}/backbone.safetensors")
    )
    assert record["data"]["sizes"]["train"] == 40  # 10 per class, 2 of them validate
    assert record["data"]["labels_used"] == 50
