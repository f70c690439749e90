"""The benchmarks still run and print their JSON (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from .conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def last_json(stdout: str) -> dict:
    start = stdout.rfind("\n{") + 1  # the JSON object printed last (0 when it is all there is)
    return json.loads(stdout[start:])


def test_train_step_overhead_benchmark():
    out = run_cli(
        "--backbone",
        "test_resnet",
        "--steps",
        "4",
        "--batch-size",
        "8",
        cwd=REPO,
        module="benchmarks.train_step_overhead",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = last_json(out.stdout)
    assert result["steps"] >= 4 and result["ratio_transferlab_over_plain"] > 0


def test_linear_probe_cache_benchmark():
    out = run_cli(
        "--epochs",
        "1",
        "--backbone",
        "simple_cnn",
        "--image-size",
        "16",
        cwd=REPO,
        module="benchmarks.linear_probe_cache",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = last_json(out.stdout)
    assert result["cached_test_acc"] is not None and result["speedup"] > 0
    assert {"cold_cache_seconds", "recompute_seconds", "plain_torch_head_seconds"} <= set(result)
