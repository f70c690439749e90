"""The benchmarks still run and print their JSON (tiny sizes; no timing is asserted).

Each benchmark's `main()` runs in this process with its command line in `sys.argv` (what
`python -m benchmarks.<module> ARGS` does, without paying the libraries' import once more per benchmark);
the processes a benchmark starts itself (startup's arms) are still processes."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from .conftest import REPO, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def run_benchmark(monkeypatch, capsys):
    """`run_benchmark(module, *args)`: `benchmarks.<module>.main()` with ARGS as its command line, from the
    repository root (where its own child processes find `benchmarks`); the JSON object it printed last."""

    def run(module: str, *args: str) -> dict:
        monkeypatch.chdir(REPO)
        monkeypatch.setattr(sys, "argv", [f"benchmarks/{module}.py", *args])
        importlib.import_module(f"benchmarks.{module}").main()
        out = capsys.readouterr().out
        start = out.rfind("\n{") + 1  # 0 when the JSON is all there is
        return json.loads(out[start:])

    return run


def test_train_step_overhead_benchmark(run_benchmark):
    args = ["--backbone", "test_resnet", "--steps", "4", "--batch-size", "8", "--repeats", "1"]
    result = run_benchmark("train_step_overhead", *args)
    assert result["steps"] >= 4 and result["ratio_transferlab_over_plain"]["median"] > 0


def test_linear_probe_cache_benchmark(run_benchmark):
    args = [
        "--epochs",
        "1",
        "--backbone",
        "simple_cnn",
        "--image-size",
        "16",
        "--repeats",
        "1",
        "--probe-iter",
        "5",
    ]
    result = run_benchmark("linear_probe_cache", *args)
    assert result["cached_test_acc"] is not None and result["speedup"]["median"] > 0
    assert {"cold_cache_seconds", "recompute_seconds", "fit_vs_plain", "fast_probe_test_acc"} <= set(result)


def test_resume_overhead_benchmark(run_benchmark, monkeypatch):
    from transferlab.run.checkpoint import AtomicCheckpointIO

    # the benchmark wraps the checkpoint writer to time its writes: the original is put back afterwards
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", AtomicCheckpointIO.save_checkpoint)
    args = ["--backbone", "simple_cnn", "--image-size", "16", "--repeats", "1"]
    result = run_benchmark("resume_overhead", *args)
    assert result["fresh_seconds_to_first_step"]["median"] > 0 and result["ratio_resumed_over_fresh"] > 0
    assert result["checkpoint_writes_per_epoch"] >= 1


def test_partial_prefix_cache_benchmark(run_benchmark):
    args = [
        "--backbone",
        "simple_cnn",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--repeats",
        "1",
        "--warmup",
        "1",  # a second round: each repetition needs its own run directory
        "--arms",
        "cached,uncached",
        "--in-process",
    ]
    result = run_benchmark("partial_prefix_cache", *args)
    assert result["speedup"]["median"] > 0 and result["prefix_cache"]["enabled"]
    assert result["cached_test_acc"] == result["uncached_test_acc"]


def test_data_scale_benchmark(run_benchmark):
    result = run_benchmark("data_scale", "--images", "40", "--repeats", "1", "--in-process")
    assert result["images"] == 40
    for kind in ("cold", "transferlab", "transferlab_folders", "torchvision", "webdataset", "hf"):
        assert result[kind]["setup"]["median"] > 0 and result[kind]["epoch"]["median"] > 0
    assert result["setup_ratio_warm_folders"] > 0 and result["first_batch_ratio_warm"] > 0


def test_gpu_check_cpu_parts(run_benchmark):
    """The plain loop, the transferlab arm (our trainer config) and the input-pipeline arm, at tiny sizes."""
    args = ["--device", "cpu", "--models", "test_resnet", "--image-size", "32", "--batch-size", "4"]
    args += ["--steps", "3", "--warmup-steps", "1", "--repeats", "1", "--settings", "fp32,bf16+cl"]
    result = run_benchmark(
        "gpu_check", *args, "--workers", "1,2", "--images", "24", "--pipeline-batches", "2"
    )
    for setting in ("fp32", "bf16+cl"):
        arms = result["models"]["test_resnet"][setting]
        assert arms["plain"]["images_per_second"]["median"] > 0
        assert arms["transferlab"]["images_per_second"]["median"] > 0
        assert arms["ratio_transferlab_over_plain"]["median"] > 0
    assert [s["precision"] for s in result["settings"]] == ["32-true", "bf16-mixed"]
    pipeline = result["input_pipeline"]
    assert set(pipeline["images_per_second_by_workers"]) == {"1", "2"}
    assert min(pipeline["images_per_second_by_workers"].values()) > 0 and pipeline["best_over_gpu"] > 0


def test_gpu_check_without_cuda_says_so_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    out = run_cli(cwd=REPO, module="benchmarks.gpu_check")
    assert out.returncode == 0 and out.stdout.count("\n") == 1 and "no CUDA GPU" in out.stdout


def test_input_pipeline_benchmark(run_benchmark):
    args = [
        "--images",
        "40",
        "--jpeg-size",
        "40",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--batches",
        "2",
    ]
    result = run_benchmark("input_pipeline", *args, "--workers", "0,1", "--repeats", "1")
    assert set(result["workers"]) == {"0", "1"}
    for measured in result["workers"].values():
        assert set(measured["images_per_second"]) == {
            "transferlab",
            "transferlab_torchvision",
            "torchvision_imagefolder",
            "tensor_v2",
        }
        assert all(s["median"] > 0 for s in measured["ratio_over_transferlab_pil"].values())


def test_startup_benchmark(run_benchmark):
    args = ["--repeats", "1", "--warmup", "0", "--sweep-jobs", "2", "dataset.classes=[0,1]"]
    args += ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    result = run_benchmark("startup", *args)
    assert 0 < result["floor_import_seconds"]["median"] and 0 < result["help_seconds"]["median"]
    assert result["one_epoch_total_seconds"]["median"] > result["first_step_seconds"]["median"] > 0
    assert result["preflight_sweep_jobs"] == 2 and result["preflight_per_job_over_first_step"]["median"] > 0
