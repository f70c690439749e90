"""experiment=source_selection / python -m transferlab.select: every candidate scored on the target's
training split, from the feature cache, LEEP/NCE with the candidate's own exported head."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from transferlab import selection
from transferlab.backbones import create_backbone
from transferlab.core.errors import TransferlabError
from transferlab.sources.select import CSV, PLOT, run_selection

from .conftest import compose_cfg, fork_cli

TINY = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A tiny finished source run (digits 0-4, one short epoch): a run directory with a head."""
    from transferlab.run.job import train

    out = tmp_path_factory.mktemp("source") / "digits04"
    record = train(compose_cfg(out, ["experiment=digits_source", *TINY]))
    assert record["status"] == "ok", record["error"]
    return out


def _select(out, *overrides):
    return compose_cfg(out, ["experiment=source_selection", *overrides])


def test_two_candidates_are_scored_from_the_cache_with_their_own_head(source_run, tmp_path):
    cfg = _select(tmp_path / "sel", f"selection.candidates=[{source_run},random]")
    table = run_selection(cfg)
    csv = pd.read_csv(tmp_path / "sel" / CSV)
    assert list(csv["candidate"]) == ["digits04", "random"]
    assert (tmp_path / "sel" / PLOT).read_bytes()[:4] == b"\x89PNG"
    src, rnd = csv.iloc[0], csv.iloc[1]
    for score in ("logme", "hscore", "hscore_reg", "knn", "linear_probe"):
        assert np.isfinite(src[score]) and np.isfinite(rnd[score]), score
    assert np.isfinite(src["leep"]) and np.isfinite(src["nce"]) and bool(src["has_head"])
    assert np.isnan(rnd["leep"]) and np.isnan(rnd["nce"]) and "no head" in rnd["note"]
    assert csv["train_samples"].tolist() == [40, 40]  # digits 5-9, 10 labels per class, 2 of them validate
    assert (csv["seconds"] > 0).all() and (csv["seconds"] >= csv["score_seconds"]).all()
    source_acc = json.loads((source_run / "results.json").read_text())["metrics"]["test/acc"]
    assert src["source_acc"] == pytest.approx(source_acc)
    assert src["logme_rank"] in (1, 2) and sorted(csv["logme_rank"]) == [1, 2]

    # LEEP by hand: the exported backbone's features of the same training images, through the exported head
    backbone = create_backbone("simple_cnn", pretrained=str(source_run), image_size=32).eval()
    dm = cfg.dataset
    from transferlab.core.errors import instantiate

    datamodule = instantiate(dm, data_config=backbone.data_config, _convert_="all")
    datamodule.setup("fit")
    with torch.no_grad():
        batches = [(backbone(x), y) for x, y in datamodule.eval_dataloader("train")]
    features = torch.cat([f for f, _ in batches]).double().numpy()
    labels = torch.cat([y for _, y in batches]).numpy()
    head = load_file(str(source_run / "head.safetensors"))
    logits = features @ head["weight"].double().numpy().T + head["bias"].double().numpy()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert src["leep"] == pytest.approx(selection.leep(probs, labels), rel=1e-4)
    assert src["nce"] == pytest.approx(selection.nce(probs.argmax(1), labels), rel=1e-6)
    assert src["logme"] == pytest.approx(selection.logme(features, labels), rel=1e-4)

    # a second selection reads the features from the cache and gives the same scores
    again = run_selection(_select(tmp_path / "sel2", f"selection.candidates=[{source_run},random]"))
    assert list(again["cache"]) == ["hit", "hit"]
    assert again["logme"].tolist() == pytest.approx(table["logme"].tolist(), rel=1e-12)


def test_weight_files_and_mappings_are_candidates_and_bad_ones_are_named(source_run, tmp_path):
    weights = source_run / "backbone.safetensors"
    cfg = _select(
        tmp_path / "sel",
        f"selection.candidates=[{{name: as_file, pretrained: {weights}}},{source_run}]",
        "selection.scores=[logme,nce]",
    )
    table = run_selection(cfg)
    assert list(table["candidate"]) == ["as_file", "digits04"]
    assert table["logme"].iloc[0] == pytest.approx(table["logme"].iloc[1], rel=1e-12)
    assert list(table.columns[:3]) == ["candidate", "logme", "nce"]
    with pytest.raises(TransferlabError, match="selection.scores has 'logmee'.*Did you mean logme"):
        run_selection(_select(tmp_path / "b1", "selection.candidates=[random]", "selection.scores=[logmee]"))
    with pytest.raises(TransferlabError, match="/no/such.safetensors is no file or directory"):
        run_selection(_select(tmp_path / "b2", "selection.candidates=[/no/such.safetensors]"))
    with pytest.raises(TransferlabError, match="names random more than once"):
        run_selection(_select(tmp_path / "b3", "selection.candidates=[random,random]"))


def test_an_unreachable_hub_candidate_is_reported_in_its_row(tmp_path):
    table = run_selection(
        _select(tmp_path / "sel", "selection.candidates=[resnet18,random]", "selection.scores=[logme]")
    )
    row = table.set_index("candidate").loc["resnet18"]
    assert np.isnan(row["logme"]) and "Could not get pretrained weights for 'resnet18'" in row["note"]
    assert np.isfinite(table.set_index("candidate").loc["random", "logme"])


@pytest.mark.slow
def test_the_select_command_writes_the_table(source_run, tmp_path):
    out = tmp_path / "cli"
    done = fork_cli(  # about what the command writes: its process is a fork of the test process
        f"selection.candidates=[{source_run},random]",
        "selection.scores=[logme,leep]",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        module="transferlab.select",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert pd.read_csv(out / CSV)["candidate"].tolist() == ["digits04", "random"]


def test_a_timm_weights_file_brings_its_own_classifier_as_the_source_head(tmp_path):
    import timm
    from safetensors.torch import save_file

    from transferlab.core.errors import instantiate

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=7).eval()
    weights = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    spec = f"{{name: tr, pretrained: {weights}, backbone: {{name: test_resnet}}}}"
    cfg = _select(tmp_path / "sel", f"selection.candidates=[{spec}]", "selection.scores=[leep,nce]")
    row = run_selection(cfg).iloc[0]
    assert row["has_head"] and row["head"] == "weights file"
    # LEEP by hand: the full timm model (classifier included) on the same training images
    backbone = create_backbone("test_resnet", pretrained=str(weights), image_size=32)
    datamodule = instantiate(cfg.dataset, data_config=backbone.data_config, _convert_="all")
    datamodule.setup("fit")
    with torch.no_grad():
        outs = [(model(x).softmax(1), y) for x, y in datamodule.eval_dataloader("train")]
    probs = torch.cat([p for p, _ in outs]).double().numpy()
    labels = torch.cat([y for _, y in outs]).numpy()
    assert row["leep"] == pytest.approx(selection.leep(probs, labels), rel=1e-4)
    assert row["nce"] == pytest.approx(selection.nce(probs.argmax(1), labels), rel=1e-6)


def test_candidate_specs_resolve_to_backbone_configs(source_run):
    from omegaconf import OmegaConf

    from transferlab.sources.candidates import resolve

    base = OmegaConf.create({"name": "simple_cnn", "pretrained": False, "image_size": 32, "kwargs": {}})
    found = resolve(["resnet18", "hf-hub:timm/resnet18.a1_in1k", "random", str(source_run)], base)
    assert [c.name for c in found] == ["resnet18", "hf-hub:timm/resnet18.a1_in1k", "random", "digits04"]
    assert found[0].backbone == {"name": "resnet18", "pretrained": True, "image_size": 32, "kwargs": {}}
    assert found[1].backbone["pretrained"] is True and found[2].backbone["pretrained"] is False
    run = found[3]
    assert run.backbone["name"] == "simple_cnn" and run.backbone["pretrained"] == str(source_run.resolve())
    assert run.head_file == source_run / "head.safetensors" and 0 <= run.source_acc <= 1
    with pytest.raises(TransferlabError, match="selection.candidates is empty"):
        resolve([], base)


def test_a_score_that_needs_more_images_is_left_empty_with_its_reason(tmp_path):
    cfg = _select(
        tmp_path / "sel",
        "selection.candidates=[random]",
        "selection.scores=[logme,knn,linear_probe]",
        "dataset.samples_per_class=2",  # one trains, one validates: one training image per class
    )
    row = run_selection(cfg).iloc[0]
    assert row["train_samples"] == 5 and np.isfinite(row["logme"])
    assert (
        np.isnan(row["knn"])
        and "knn: k=5 must be between 1 and the number of samples minus one" in row["note"]
    )
    assert (
        np.isnan(row["linear_probe"]) and "linear_probe: linear_probe_score needs at least 2" in row["note"]
    )
