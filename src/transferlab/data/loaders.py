"""DataLoaders whose order is a pure function of (seed, epoch): exact after a checkpoint resume."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochSeededSampler(Sampler[int]):
    """A random permutation drawn from its own generator seeded with (seed, epoch).

    Lightning calls `set_epoch` before every epoch, so the order does not depend on the global random
    stream, nor on when Lightning creates the iterator (which differs when a run resumes).
    """

    def __init__(self, data_source: Sized, seed: int = 0):
        self.data_source = data_source
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.data_source)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, **kwargs: Any) -> DataLoader:
    """A DataLoader that never draws from the global random stream (its own generator for worker seeds)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSeededSampler(dataset, seed) if shuffle else None,
        generator=torch.Generator().manual_seed(int(seed)),
        **kwargs,
    )
