"""EMA of the weights (Lightning's EMAWeightAveraging, mended in `transferlab.run.ema`) on real runs."""

from __future__ import annotations

import json

import pytest
import torch

from transferlab.run.ema import ema_avg_fn

from .test_faults import assert_same_as, run_forked

pytestmark = pytest.mark.slow


def test_ema_warmup_follows_the_timm_formula_and_decay_zero_is_the_current_weights():
    ema, current = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])
    assert torch.equal(ema_avg_fn(0.0, warmup=False)(ema, current, torch.tensor(5)), current)
    warmed = ema_avg_fn(0.999, warmup=True)(ema, current, torch.tensor(0))  # decay 1/10 at the first update
    assert torch.allclose(warmed, 0.1 * ema + 0.9 * current)
    assert torch.allclose(
        ema_avg_fn(0.5, warmup=True)(ema, current, torch.tensor(1000)), 0.5 * (ema + current)
    )


def test_ema_with_decay_zero_equals_the_plain_weights(tmp_path):
    assert run_forked(tmp_path / "plain") == 0
    assert run_forked(tmp_path / "ema", "ema.enabled=true", "ema.decay=0.0") == 0
    assert_same_as(tmp_path / "ema", tmp_path / "plain")


def test_a_killed_run_with_ema_resumes_bit_identically_and_tests_the_average(tmp_path):
    ema = ("ema.enabled=true", "ema.decay=0.9")
    assert run_forked(tmp_path / "straight", *ema) == 0
    killed = tmp_path / "killed"
    assert run_forked(killed, *ema, crash="train_step@7") == 137  # after a step checkpoint, mid-epoch 2
    assert run_forked(killed, *ema, "resume=true") == 0
    assert_same_as(killed, tmp_path / "straight")

    record = json.loads((killed / "results.json").read_text())
    saved = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=False)
    average, raw = saved["state_dict"], saved["current_model_state"]
    assert any(not torch.equal(average[k], raw[k]) for k in average if k.startswith("head."))
    assert int(saved["averaging_state"]["n_averaged"]) > 1
    # what was tested is the average: scoring the checkpoint's averaged weights gives the test accuracy
    from transferlab.core.config import compose_train
    from transferlab.evaluation.scoring import loader_of, predict, scores
    from transferlab.run import build
    from transferlab.strategies import build_strategy
    from transferlab.strategies.context import RunContext

    from .test_faults import RUN

    cfg = compose_train([*RUN, *ema], output_dir=killed)
    strategy = build_strategy(cfg.strategy)
    backbone = build.build_backbone(cfg, False)
    datamodule = build.build_datamodule(cfg, backbone)
    module = build.build_module(cfg, strategy, RunContext(cfg, datamodule, {}), backbone)
    loader = loader_of(datamodule.dataset("test", augment=False), 256)
    module.load_state_dict(average, strict=False)
    assert scores(*predict(module, loader), module.num_classes)["acc"] == record["metrics"]["test/acc"]
