"""Extension from outside the package, as a user does it: one module of their own (a strategy, a
regularizer, a data source, a metric) and a config dir, in a folder outside `src/`; then the CLI trains
and sweeps with them and reports, and a mistake in the user's own keys is refused at the door exactly as
one in ours (one line, exit 2, no run directory). Nothing in the package is edited."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from transferlab.train import main

from .conftest import REPO, fork_cli

USER_MODULE = '''
"""A user's own extensions of transferlab (this file is all the code they write)."""
from typing import Annotated

import numpy as np
import torch
from PIL import Image
from pydantic import Field
from torchmetrics import Metric

from transferlab.data.sources import DataSource
from transferlab.strategies import TransferStrategy
from transferlab.strategies.regularizers import Regularizer


class HeadAndFirst(TransferStrategy):
    """The head and the first backbone stage train, that stage at first_lr_mult x the backbone's lr."""

    def __init__(self, first_lr_mult: Annotated[float, Field(gt=0)] = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.first_lr_mult = float(first_lr_mult)

    def trainable_stages(self, n_stages, epoch):
        return {0}

    def lr_scales(self, n_stages):
        return [self.backbone_lr_mult * self.first_lr_mult] + [self.backbone_lr_mult] * (n_stages - 1)


class HeadNorm(Regularizer):
    """weight x the squared norm of the head's weight matrix, added to the loss."""

    def __init__(self, weight: Annotated[float, Field(ge=0)] = 1.0, name=None):
        super().__init__(name)
        self.weight = float(weight)

    def penalty(self, module, x, features):
        return self.weight * sum((p ** 2).sum() for p in module.head.parameters() if p.ndim > 1)


class Stripes(DataSource):
    """Generated 16x16 images: class c has a bright vertical stripe at column 4c (plus noise)."""

    name = "stripes"

    def __init__(self, per_class: Annotated[int, Field(ge=2)] = 8, classes: int = 3):
        rng = np.random.default_rng(0)
        self.images = {}
        for split, n in (("train", per_class), ("test", 3)):
            self.images[split] = []
            for c in range(classes):
                for _ in range(n):
                    image = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
                    image[:, 4 * c : 4 * c + 3] = 220
                    self.images[split].append((image, f"s{c}"))

    def items(self, split):
        if split not in self.images:
            return None
        found = {}
        for i, (_, label) in enumerate(self.images[split]):
            found.setdefault(label, []).append((split, i))
        return found

    def read(self, key):
        split, i = key
        return Image.fromarray(self.images[split][i][0])


class MeanConfidence(Metric):
    """The mean probability the model gives its predicted class."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, probs, target):
        self.total += probs.max(dim=-1).values.sum()
        self.count += probs.shape[0]

    def compute(self):
        return self.total / self.count
'''

CONFIGS = {
    "strategy/head_and_first.yaml": """
        defaults:
          - _base
          - _self_
        _target_: mylab.HeadAndFirst
        name: head_and_first
        first_lr_mult: 0.5
    """,
    "regularizer/head_norm.yaml": """
        _target_: mylab.HeadNorm
        name: head_norm
        weight: 0.5
    """,
    "dataset/stripes.yaml": """
        defaults:
          - image_folder
          - _self_
        _target_: transferlab.data.DataModule
        name: stripes
        root: null
        image_size: 16
        batch_size: 8
        num_workers: 0
        persistent_workers: false
        augment:
          enabled: false
        source:
          _target_: mylab.Stripes
          per_class: 8
    """,
    "experiment/mine.yaml": """
        # @package _global_
        defaults:
          - override /strategy: head_and_first
          - override /regularizer: head_norm
          - override /dataset: stripes
          - override /backbone: simple_cnn
          - override /callbacks: minimal
        metrics:
          mean_conf:
            _target_: mylab.MeanConfidence
    """,
}
QUICK = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "optimizer.lr=0.0001",
]


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> dict[str, Path]:
    """The user's folder (outside src/): their module, their config dir, and starting weights."""
    root = tmp_path_factory.mktemp("user")
    (root / "code").mkdir()
    (root / "code" / "mylab.py").write_text(USER_MODULE)
    for name, text in CONFIGS.items():
        path = root / "conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    from transferlab.backbones import create_backbone

    backbone = create_backbone("simple_cnn", image_size=16)
    save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()}, root / "start.safetensors")
    stages = [list(s.param_names) for s in backbone.stages]
    return {"root": root, "code": root / "code", "conf": root / "conf", "stages": stages}


@pytest.fixture
def on_their_path(user, monkeypatch) -> None:
    """The user's code folder on sys.path, where their PYTHONPATH puts it, and their module not imported yet:
    a command forked from this process (`fork_cli`) imports it from that folder."""
    monkeypatch.syspath_prepend(str(user["code"]))
    monkeypatch.delitem(sys.modules, "mylab", raising=False)


@pytest.mark.slow
def test_a_users_strategy_regularizer_source_and_metric_train_sweep_and_report(user, on_their_path):
    sweep = user["root"] / "sweep"
    done = fork_cli(
        "-m",
        "--config-dir",
        str(user["conf"]),
        "experiment=mine",
        "strategy=head_and_first,full",
        f"backbone.pretrained={user['root'] / 'start.safetensors'}",
        *QUICK,
        f"hydra.sweep.dir={sweep}",
        cwd=user["root"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = {
        r["strategy"]: (p.parent, r)
        for p in sweep.glob("*/results.json")
        for r in [json.loads(p.read_text())]
    }
    assert set(records) == {"head_and_first", "full"}
    out, record = records["head_and_first"]
    assert record["status"] == "ok", record.get("error")
    assert record["dataset"] == "stripes" and record["data"]["class_names"] == ["s0", "s1", "s2"]

    # The strategy: stage 0 trains at half the backbone's rate; every later stage is exactly as it started.
    start, end = load_file(user["root"] / "start.safetensors"), load_file(out / "backbone.safetensors")
    first, later = user["stages"][0], [n for s in user["stages"][1:] for n in s]
    assert all(not (start[n] == end[n]).all() for n in first)
    assert all((start[n] == end[n]).all() for n in later)
    backbone = [g for g in record["param_groups"] if g["name"].startswith("backbone.")]
    assert sorted(n for g in backbone for n in g["params"]) == sorted(first)
    assert [g["lr"] for g in backbone] == [pytest.approx(0.0001 * 0.5)] * len(backbone)
    head = load_file(out / "head.safetensors")
    assert record["trainable_params"] == sum(start[n].numel() for n in first) + sum(
        v.numel() for v in head.values()
    )

    # The regularizer: its term, weight x ||W_head||^2, is what the run logged as train/reg.
    steps = pd.read_csv(next(out.glob("csv/**/metrics.csv")))
    logged = steps["train/reg"].dropna()
    assert len(logged) == 3  # one term per training step
    assert logged.iloc[-1] == pytest.approx(0.5 * float((head["weight"] ** 2).sum()), rel=0.01)

    # The metric: logged on validation and test, recorded, and a column of the sweep's report.
    assert 1 / 3 <= record["metrics"]["test/mean_conf"] <= 1.0
    assert "val/mean_conf" in steps
    rows = pd.read_csv(sweep / "results.csv")
    assert rows["test/mean_conf"].notna().sum() == 2
    assert "test/mean_conf" in (sweep / "report.md").read_text()


@pytest.mark.parametrize(
    "override,named",
    [
        (
            "strategy.first_lr_mult=-3",
            "strategy.first_lr_mult=-3: must be > 0.0 (a setting of mylab.HeadAndFirst).",
        ),
        ("strategy.first_lr_mult=abc", "strategy.first_lr_mult=abc: must be a number"),
        ("+strategy.first_lr_mul=0.5", "Did you mean strategy.first_lr_mult?"),
        ("regularizer.weight=-1", "regularizer.weight=-1: must be >= 0.0 (a setting of mylab.HeadNorm)."),
        (
            "dataset.source.per_class=1",
            "dataset.source.per_class=1: must be >= 2 (a setting of mylab.Stripes).",
        ),
        ("+dataset.source.per_clas=3", "Did you mean dataset.source.per_class?"),
        ("metrics.mean_conf._target_=mylab.Stripes", "metrics.mean_conf._target_=mylab.Stripes is the class"),
    ],
)
def test_a_mistake_in_a_users_own_keys_is_refused_at_the_door(user, override, named, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(user["code"]))
    run_dir = user["root"] / "refused"
    argv = ["--config-dir", str(user["conf"]), "experiment=mine", override, f"hydra.run.dir={run_dir}"]
    monkeypatch.setattr(sys, "argv", ["transferlab-train", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert named in err[0]
    assert not run_dir.exists()


def test_the_console_refuses_a_users_bad_value_before_any_directory(user, on_their_path):
    run_dir = user["root"] / "console"
    refused = fork_cli(
        "--config-dir",
        str(user["conf"]),
        "experiment=mine",
        "strategy.first_lr_mult=-3",
        f"hydra.run.dir={run_dir}",
        cwd=REPO,
    )
    assert refused.returncode == 2
    assert refused.stderr == (
        "error: strategy.first_lr_mult=-3: must be > 0.0 (a setting of mylab.HeadAndFirst).\n"
    )
    assert not run_dir.exists()


def test_a_class_may_declare_its_settings_as_a_pydantic_model_instead(tmp_path):
    """`Settings` (a pydantic model, `extra="forbid"`) is checked instead of the `__init__` arguments."""
    from omegaconf import OmegaConf
    from pydantic import BaseModel, ConfigDict, Field

    from transferlab.core.settings import check_node

    class Declared:
        class Settings(BaseModel):
            model_config = ConfigDict(extra="forbid")
            size: int = Field(default=3, ge=1)

        def __init__(self, **anything):
            self.anything = anything

    module = tmp_path / "declared_here.py"
    module.write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        import declared_here

        declared_here.Declared = Declared
        node = {"_target_": "declared_here.Declared", "size": 0, "sise": 2}
        found = check_node(node, "strategy", OmegaConf.create({"strategy": node}))
        assert found == [
            "strategy.sise: declared_here.Declared has no such setting. Did you mean strategy.size? Its settings: size.",
            "strategy.size=0: must be >= 1 (a setting of declared_here.Declared).",
        ]
        assert check_node({"_target_": node["_target_"], "size": 2}, "x", OmegaConf.create({})) == []
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("declared_here", None)
