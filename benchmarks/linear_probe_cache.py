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
import statistics

import torch

from benchmarks.common import compose_run, emit, interleaved, ratio, spread, timed, workdir
from transferlab.run.job import train
from transferlab.strategies.probe import fit_linear_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probe-iter", type=int, default=100, help="L-BFGS iterations per L2 value")
    args = parser.parse_args()
    root = workdir()
    common = [
        "strategy=linear_probe",
        "strategy.head_solver=sgd",  # the training-loop head, cached or not; the fast probe is timed apart
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
    runs: dict[str, list] = {"cached": [], "recomputed": []}

    def arm(name: str, cache: str):
        def run() -> float:
            out = root / f"{name}{len(runs[name])}"
            record, seconds = timed(train, compose_run(out, [*common, f"strategy.cache_features={cache}"]))
            runs[name].append(record)
            shutil.rmtree(out, ignore_errors=True)
            return seconds

        return run

    seconds = interleaved(
        {"cached": arm("cached", "true"), "recomputed": arm("recomputed", "false")},
        args.repeats,
        warmup=False,
    )
    cached, recomputed = runs["cached"][-1], runs["recomputed"][-1]
    assert cached["feature_cache"]["hits"] == ["train", "val", "test"], cached["feature_cache"]
    features = {
        split: torch.load(next((root / "cache" / "features").glob(f"{split}-*.pt")), weights_only=True)
        for split in ("train", "val", "test")
    }
    probe = fast_probe_vs_plain(features, len(cached["class_names"]), args.lr, args.repeats, args.probe_iter)
    result = {
        "benchmark": "linear_probe_cache",
        "backbone": args.backbone,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "repeats": args.repeats,
        "cold_cache_seconds": round(cold_s, 3),
        "cached_seconds": spread(seconds["cached"]),
        "recompute_seconds": spread(seconds["recomputed"]),
        "speedup": ratio(seconds["recomputed"], seconds["cached"]),
        "cold_speedup": round(statistics.median(seconds["recomputed"]) / cold_s, 2),
        "cached_test_acc": cached["metrics"].get("test/acc"),
        "recompute_test_acc": recomputed["metrics"].get("test/acc"),
        "acc_difference_points": round(
            100 * abs(cached["metrics"]["test/acc"] - recomputed["metrics"]["test/acc"]), 3
        ),
        **probe,
        "target": "speedup (warm cache) >= 10, acc_difference_points <= 1, fit_vs_plain <= 2",
    }
    emit(result)
    shutil.rmtree(root, ignore_errors=True)


def fast_probe_vs_plain(features: dict, classes: int, lr: float, repeats: int, max_iter: int) -> dict:
    """The L-BFGS probe against a plain PyTorch loop making as many passes over the same cached
    training tensors (mini-batch AdamW); both test accuracies."""
    train, val, test = ((features[s]["features"], features[s]["labels"]) for s in ("train", "val", "test"))
    head, fit = fit_linear_head(train, val, classes, max_iter=max_iter)
    passes = fit.iterations

    def fast() -> float:
        return timed(fit_linear_head, train, val, classes, max_iter=max_iter)[1]

    def plain() -> float:
        return plain_torch_head_on(train, classes, passes, lr)[1]

    seconds = interleaved({"fast": fast, "plain": plain}, repeats)
    plain_head = plain_torch_head_on(train, classes, passes, lr)[0]
    accuracy = lambda h: float((h(test[0]).argmax(1) == test[1]).float().mean())  # noqa: E731
    return {
        "fast_probe_passes": passes,
        "fast_probe_l2": fit.l2,
        "fast_probe_fit_seconds": spread(seconds["fast"]),
        "plain_loop_seconds": spread(seconds["plain"]),
        "fit_vs_plain": ratio(seconds["fast"], seconds["plain"]),
        "fast_probe_test_acc": round(accuracy(head), 4),
        "plain_loop_test_acc": round(accuracy(plain_head), 4),
    }


def plain_torch_head_on(train, classes: int, passes: int, lr: float):
    """nn.Linear trained by a bare AdamW loop over the features for `passes` epochs (batches of 64)."""
    x, y = train
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)

    def loop():
        for _ in range(passes):
            for xb, yb in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(head(xb), yb).backward()
                opt.step()

    return head, timed(loop)[1]


if __name__ == "__main__":
    main()
