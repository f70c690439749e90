"""Linear probe with the on-disk feature cache vs recomputing the frozen backbone every step.

Same data, seed and epochs in one process. The cold run builds the cache (one backbone pass over
every split); the cached run finds it (as every later run of a sweep does); both are reported.
A plain PyTorch loop training the same head on the same cached features gives the framework overhead.
Prints JSON: times, test accuracies, and the ratios.

    .venv/bin/python benchmarks/linear_probe_cache.py [--epochs 20] [--backbone resnet18]
"""

from __future__ import annotations

import argparse
import shutil

import torch

from benchmarks.common import compose_run, emit, timed, workdir
from transferlab.train import train


def plain_torch_head(cache_dir, num_classes: int, epochs: int, lr: float, seed: int) -> float:
    """Train nn.Linear on the cached train features with a bare loop; returns seconds."""
    files = sorted(cache_dir.glob("train-*.pt"))
    data = torch.load(files[0], weights_only=True)
    x, y = data["features"], data["labels"]
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)

    def loop():
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(head(xb), yb).backward()
                opt.step()

    return timed(loop)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    root = workdir()
    common = [
        "strategy=linear_probe",
        f"backbone={args.backbone}",
        f"dataset.image_size={args.image_size}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        f"optimizer.lr={args.lr}",
        "seed=0",
        f"paths.cache_dir={root / 'cache'}",
    ]
    cold, cold_s = timed(train, compose_run(root / "cold", [*common, "strategy.cache_features=true"]))
    cached, cached_s = timed(train, compose_run(root / "cached", [*common, "strategy.cache_features=true"]))
    assert cached["feature_cache"]["hits"] == ["train", "val", "test"], cached["feature_cache"]
    recomputed, recompute_s = timed(
        train, compose_run(root / "recomputed", [*common, "strategy.cache_features=false"])
    )
    plain_s = plain_torch_head(
        root / "cache" / "features", len(cached["class_names"]), args.epochs, args.lr, 0
    )
    result = {
        "benchmark": "linear_probe_cache",
        "backbone": args.backbone,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "cold_cache_seconds": round(cold_s, 3),
        "cold_speedup": round(recompute_s / cold_s, 2),
        "cached_seconds": round(cached_s, 3),
        "cached_fit_seconds": cached["train_seconds"],
        "recompute_seconds": round(recompute_s, 3),
        "recompute_fit_seconds": recomputed["train_seconds"],
        "speedup": round(recompute_s / cached_s, 2),
        "fit_speedup": round(recomputed["train_seconds"] / cached["train_seconds"], 2),
        "cached_test_acc": cached["metrics"].get("test/acc"),
        "recompute_test_acc": recomputed["metrics"].get("test/acc"),
        "acc_difference_points": round(
            100 * abs(cached["metrics"]["test/acc"] - recomputed["metrics"]["test/acc"]), 3
        ),
        "plain_torch_head_seconds": round(plain_s, 3),
        "cached_fit_vs_plain_torch": round(cached["train_seconds"] / plain_s, 2),
        "target": "speedup (warm cache) >= 10 and acc_difference_points <= 1",
    }
    emit(result)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
