"""The `gpu` trainer config for real, with bf16 (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from transferlab.run.job import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_gpu_bf16_run(make_cfg):
    record = train(make_cfg("trainer=gpu", "trainer.max_epochs=2", "dataset.classes=[0,1,2,3,4]"))
    assert record["status"] == "ok", record["error"]
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"
    assert record["metrics"]["test/acc"] > 0.5
    assert record["peak_memory_mb"] > 0


def test_gpu_linear_probe_cache_computed_on_gpu(make_cfg):
    record = train(
        make_cfg("trainer=gpu", "strategy=linear_probe", "backbone=resnet18", "dataset.classes=[0,1,2]")
    )
    assert record["status"] == "ok", record["error"]
    assert record["feature_cache"]["enabled"] is True
