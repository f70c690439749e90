"""Framework overhead of a transferlab training epoch against a plain PyTorch loop, same process.

Both train the same backbone + head (full fine-tuning, AdamW, same batches held in memory) for the
same number of steps; transferlab runs through TransferModule and a real Lightning Trainer (metrics,
logging, strategy gates). The two arms alternate (plain, transferlab, plain, ...) after a warm-up round,
`--repeats` times; prints JSON with both times and the per-repeat ratio as median with min-max.

    .venv/bin/python -m benchmarks.train_step_overhead [--backbone resnet18] [--steps 60]
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import emit, interleaved, ratio, spread
from transferlab.backbones import create_backbone
from transferlab.module import TransferModule
from transferlab.strategies import Full


def plain_loop(backbone: torch.nn.Module, head: torch.nn.Module, loader: DataLoader, epochs: int) -> float:
    model = torch.nn.Sequential(backbone, head).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    n = args.batch_size * 20
    data = TensorDataset(torch.randn(n, 3, args.image_size, args.image_size), torch.randint(0, 10, (n,)))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    epochs = max(1, args.steps // len(loader))

    backbone = create_backbone(args.backbone, image_size=args.image_size)
    head = torch.nn.Linear(backbone.num_features, 10)

    def transferlab_run() -> float:
        module = TransferModule(
            create_backbone(args.backbone, image_size=args.image_size), Full(), num_classes=10
        )
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        return time.perf_counter() - start

    runs = interleaved(
        {"plain": lambda: plain_loop(backbone, head, loader, epochs), "transferlab": transferlab_run},
        repeats=args.repeats,
    )
    steps = epochs * len(loader)
    emit(
        {
            "benchmark": "train_step_overhead",
            "backbone": args.backbone,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": steps,
            "repeats": args.repeats,
            "plain_torch_seconds": spread(runs["plain"]),
            "transferlab_seconds": spread(runs["transferlab"]),
            "ratio_transferlab_over_plain": ratio(runs["transferlab"], runs["plain"]),
        }
    )


if __name__ == "__main__":
    main()
