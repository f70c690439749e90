"""Partial fine-tuning with the frozen prefix computed once, against recomputing it every step.

resnet18 (random init) at 64 px on digits, the last stage trainable (`strategy=partial
strategy.trainable_stages=1`). Arms, each a fresh process (peak memory is the arm's own), run in turn
(cached, uncached, full, cached, ...) `--repeats` times after a warm-up that builds the cache:

- `speedup`: training seconds per epoch uncached / cached (median of per-repeat ratios, min-max);
- `memory_ratio`: the growth of peak resident memory while training (above what the loaded libraries
  take), partial fine-tuning (cached) / full fine-tuning;
- the test accuracies of cached and uncached runs (the same up to float rounding).

    python -m benchmarks.partial_prefix_cache [--epochs 3] [--repeats 3] [--in-process]

`--in-process` (smoke tests) runs every arm in this process: nothing is imported per arm, and the peak
memory is then not the arm's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import compose_run, emit, interleaved, ratio, spread, workdir

ARMS = {
    "cached": ["strategy=partial", "strategy.trainable_stages=1", "strategy.cache_prefix=true"],
    "uncached": ["strategy=partial", "strategy.trainable_stages=1", "strategy.cache_prefix=false"],
    "full": ["strategy=full"],
}


def arm(name: str, root: Path, epochs: int, backbone: str, image_size: int) -> dict:
    import transferlab.train  # noqa: F401 (loaded before the baseline is read)
    from transferlab.run.job import train

    overrides = [
        *ARMS[name],
        f"backbone={backbone}",
        f"dataset.image_size={image_size}",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        "seed=0",
        f"paths.cache_dir={root / 'cache'}",
    ]
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-run-", dir=root))  # one per repetition
    cfg = compose_run(run_dir, overrides)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # libraries loaded, nothing trained
    record = train(cfg)
    assert record["status"] == "ok", record["error"]
    return {
        "epoch_seconds": record["train_seconds"] / epochs,
        "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024,
        "test_acc": record["metrics"]["test/acc"],
        "prefix_cache": record.get("prefix_cache"),
    }


def arm_result(name: str, root: Path, args: argparse.Namespace) -> dict:
    """One arm's measurement, in a fresh process (or in this one with `--in-process`)."""
    if args.in_process:
        return arm(name, root, args.epochs, args.backbone, args.image_size)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.partial_prefix_cache", "--arm", name, "--root", str(root),
         "--epochs", str(args.epochs), "--backbone", args.backbone, "--image-size", str(args.image_size)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="1: a first round that is not counted")
    parser.add_argument("--arms", default="cached,uncached,full", help="which arms (smoke tests: fewer)")
    parser.add_argument("--in-process", action="store_true", help="smoke tests: every arm in this process")
    parser.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, Path(args.root), args.epochs, args.backbone, args.image_size)))
        return
    root = workdir()
    names = args.arms.split(",")
    results: dict[str, list[dict]] = {name: [] for name in names}

    def run(name: str):
        def go() -> float:
            results[name].append(arm_result(name, root, args))
            return results[name][-1]["epoch_seconds"]

        return go

    seconds = interleaved({name: run(name) for name in names}, args.repeats, warmup=bool(args.warmup))
    for name in names:
        results[name] = results[name][args.warmup :]  # without the warm-up
    peak = {name: [r["peak_mb"] for r in results[name]] for name in names}
    emit(
        {
            "benchmark": "partial_prefix_cache",
            "backbone": args.backbone,
            "image_size": args.image_size,
            "epochs": args.epochs,
            "repeats": args.repeats,
            "epoch_seconds": {name: spread(values) for name, values in seconds.items()},
            "speedup": ratio(seconds["uncached"], seconds["cached"]),
            "memory_ratio": ratio(peak["cached"], peak["full"]) if "full" in peak else None,
            "peak_mb": {name: spread(values) for name, values in peak.items()},
            "cached_test_acc": results["cached"][-1]["test_acc"],
            "uncached_test_acc": results["uncached"][-1]["test_acc"],
            "prefix_cache": results["cached"][-1]["prefix_cache"],
            "target": "speedup >= 3, memory_ratio <= 0.6",
        }
    )


if __name__ == "__main__":
    main()
