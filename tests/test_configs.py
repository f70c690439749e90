"""Every option of every config group composes and instantiates with the real stack."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from transferlab.backbones import Backbone
from transferlab.core.errors import instantiate
from transferlab.data import DataModule, DataSource
from transferlab.strategies import TransferStrategy, build_strategy

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    """Selectable options of a group (files starting with `_` are bases that others extend)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_groups_exist():
    for group in (
        "dataset",
        "backbone",
        "strategy",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "hydra",
        "debug",
        "experiment",
    ):
        assert (CONF / group).is_dir(), group
    assert {
        "linear_probe",
        "partial",
        "full",
        "scratch",
        "gradual_unfreeze",
        "lp_ft",
        "bitfit",
        "lora",
    } <= set(options("strategy"))
    assert {"cpu", "gpu", "mps", "ddp", "ddp_cpu"} <= set(options("trainer"))


@pytest.mark.parametrize("name", options("dataset"))
def test_dataset_options(make_cfg, image_folder, tmp_path, name):
    from transferlab.data.pack import pack

    pack(image_folder, tmp_path / "shards", shard_size=10)
    extra = {
        "image_folder": [f"dataset.root={image_folder}"],
        "hf": [f"dataset.path={image_folder}"],
        "webdataset": [f"dataset.urls={tmp_path / 'shards'}"],
    }.get(name, [])
    cfg = make_cfg(f"dataset={name}", *extra)
    dm = instantiate(cfg.dataset, data_config={"mean": (0.5,) * 3, "std": (0.5,) * 3}, _convert_="all")
    assert isinstance(dm, DataModule) and isinstance(dm.source, DataSource)  # one module, any source
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, cfg.dataset.image_size, cfg.dataset.image_size)
    assert dm.num_classes == len(cfg.dataset.classes or dm.class_names)


@pytest.mark.parametrize("name", options("backbone"))
def test_backbone_options(make_cfg, name):
    cfg = make_cfg(f"backbone={name}")
    backbone = instantiate(cfg.backbone, _convert_="all")
    assert isinstance(backbone, Backbone)
    assert len(backbone.stages) >= 3
    feats = backbone.eval()(torch.zeros(2, 3, cfg.dataset.image_size, cfg.dataset.image_size))
    assert feats.shape == (2, backbone.num_features)
    assert {"mean", "std"} <= set(backbone.data_config)


@pytest.mark.parametrize("name", options("strategy"))
def test_strategy_options(make_cfg, name):
    cfg = make_cfg(f"strategy={name}")
    strategy = build_strategy(cfg.strategy)
    assert isinstance(strategy, TransferStrategy)
    assert strategy.name == name == cfg.strategy.name


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_options(make_cfg, name):
    cfg = make_cfg(f"trainer={name}")
    needs_gpu = cfg.trainer.accelerator == "gpu"
    if (needs_gpu and not torch.cuda.is_available()) or (
        cfg.trainer.accelerator == "mps" and not torch.backends.mps.is_available()
    ):
        assert cfg.trainer.precision is not None  # composes; instantiating needs the device
        pytest.skip(f"trainer={name} needs {cfg.trainer.accelerator}")
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    assert isinstance(trainer, pl.Trainer)
    if name == "ddp_cpu":
        assert trainer.num_devices == 2


@pytest.mark.parametrize("name", options("logger"))
def test_logger_options(make_cfg, name):
    cfg = make_cfg(f"logger={name}")
    loggers = [instantiate(c, _convert_="all") for c in cfg.logger.values()]
    assert loggers and all(isinstance(lg, pl.loggers.Logger) for lg in loggers)
    if "wandb" in cfg.logger:
        assert cfg.logger.wandb.mode == "offline"
        assert cfg.logger.wandb.job_type == cfg.strategy.name


@pytest.mark.parametrize("name", options("callbacks"))
def test_callback_options(make_cfg, name):
    cfg = make_cfg(f"callbacks={name}")
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    assert any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)


@pytest.mark.parametrize("name", options("debug"))
def test_debug_options(make_cfg, name):
    cfg = make_cfg(f"debug={name}")
    assert OmegaConf.to_container(cfg.trainer, resolve=True)


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_options(make_cfg, name):
    cfg = make_cfg(f"experiment={name}")
    assert cfg.experiment_name
    OmegaConf.to_container(cfg, resolve=True)
