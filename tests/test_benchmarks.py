"""The benchmarks still run and print their JSON (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from .conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def run_benchmark(module: str, *args: str) -> dict:
    """Run `python -m benchmarks.<module> ARGS` and return the JSON object it printed last."""
    out = run_cli(*args, cwd=REPO, module=f"benchmarks.{module}")
    assert out.returncode == 0, out.stderr[-2000:]
    start = out.stdout.rfind("\n{") + 1  # 0 when the JSON is all there is
    return json.loads(out.stdout[start:])


def test_train_step_overhead_benchmark():
    result = run_benchmark(
        "train_step_overhead", "--backbone", "test_resnet", "--steps", "4", "--batch-size", "8"
    )
    assert result["steps"] >= 4 and result["ratio_transferlab_over_plain"] > 0


def test_linear_probe_cache_benchmark():
    result = run_benchmark(
        "linear_probe_cache", "--epochs", "1", "--backbone", "simple_cnn", "--image-size", "16"
    )
    assert result["cached_test_acc"] is not None and result["speedup"] > 0
    assert {"cold_cache_seconds", "recompute_seconds", "plain_torch_head_seconds"} <= set(result)


def test_resume_overhead_benchmark():
    result = run_benchmark(
        "resume_overhead", "--backbone", "simple_cnn", "--image-size", "16", "--repeats", "1"
    )
    assert result["fresh_seconds_to_first_step"]["median"] > 0 and result["ratio_resumed_over_fresh"] > 0
    assert result["checkpoint_writes_per_epoch"] >= 1
