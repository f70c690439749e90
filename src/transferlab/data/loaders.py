"""DataLoaders whose order is a pure function of (seed, epoch, rank): exact after a resume, at an epoch
boundary or in the middle of an epoch, with one process or several."""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ImageDataset(Dataset):
    """(key, label) samples, each image read by `read(key)` (a source's `read`) and transformed."""

    def __init__(self, samples: Sequence[tuple[Any, int]], transform, read: Callable[[Any], Any]):
        self.samples = list(samples)
        self.transform = transform
        self.read = read

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        key, label = self.samples[index]
        return self.transform(self.read(key)), label


def in_loky_worker() -> bool:
    """Whether this process is a joblib (loky) worker, as `hydra/launcher=local` jobs are."""
    return multiprocessing.current_process().name.startswith("LokyProcess")


def worker_context(requested: str | None) -> str | None:
    """DataLoader workers inside a joblib (loky) job crash unless forked (hydra #964, joblib #1104)."""
    if requested is None and in_loky_worker():
        return "fork"
    return requested


def distributed() -> tuple[int, int]:
    """(rank, world size) of the process group, or (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def resume_position(trainer: pl.Trainer | None) -> tuple[int, int]:
    """(epoch, batches of it already trained) where a restored fit continues; (0, 0) for a fresh one.

    Read when Lightning asks for the train loader, which is after the checkpoint's loop state is back.
    """
    if trainer is None or not trainer.training:
        return 0, 0
    epochs = trainer.fit_loop.epoch_progress.current
    if epochs.started > epochs.processed:  # stopped inside epoch `processed`, after `ready` batches
        return epochs.processed, trainer.fit_loop.epoch_loop.batch_progress.current.ready
    return epochs.processed, 0


class EpochSeededSampler(Sampler[int]):
    """A random permutation drawn from its own generator seeded with (seed, epoch), so the order never
    depends on the global random stream nor on when Lightning creates the iterator.

    Under DDP each rank takes every `world`-th index of the permutation (padded by wrapping around, so
    every rank trains the same number of batches). `start_epoch`/`skip` make the first iteration resume
    mid-epoch: the batches a checkpoint had already trained are not drawn again.
    """

    def __init__(
        self,
        data_source: Sized,
        seed: int = 0,
        start_epoch: int = 0,
        skip: int = 0,
        worker_generator: torch.Generator | None = None,
    ):
        self.data_source = data_source
        self.seed = int(seed)
        self.skip = int(skip)
        self.rank, self.world = distributed()
        self.worker_generator = worker_generator
        self.set_epoch(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before each epoch's iterator is created; worker seeds follow the epoch too."""
        self.epoch = int(epoch)
        if self.worker_generator is not None:
            self.worker_generator.manual_seed(self.seed * 1_000_003 + self.epoch + 7_919)

    def __len__(self) -> int:
        return math.ceil(len(self.data_source) / self.world)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.data_source), generator=generator).tolist()
        total = len(self) * self.world
        order = (order * math.ceil(total / max(len(order), 1)))[:total][self.rank :: self.world]
        skip, self.skip = self.skip, 0  # only the resumed epoch starts part-way
        yield from order[skip:]


class RankShardSampler(Sampler[int]):
    """Evaluation under DDP: rank r scores samples r, r + world, ...: each sample exactly once, no
    padding (DistributedSampler repeats samples to even out the ranks, which biases test metrics)."""

    def __init__(self, data_source: Sized):
        self.data_source = data_source
        self.rank, self.world = distributed()

    def __len__(self) -> int:
        return len(range(self.rank, len(self.data_source), self.world))

    def __iter__(self) -> Iterator[int]:
        yield from range(self.rank, len(self.data_source), self.world)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    position: tuple[int, int] = (0, 0),
    **kwargs: Any,
) -> DataLoader:
    """A DataLoader that never draws from the global random stream: its own generator for worker seeds,
    reseeded per epoch (exact resume with workers too, unless they persist across epochs).

    `shuffle` loaders (training) resume at `position` = (epoch, batches done), see `resume_position`.
    """
    epoch, done = position
    generator = torch.Generator().manual_seed(int(seed))
    sampler = (
        EpochSeededSampler(
            dataset, seed, start_epoch=epoch, skip=done * batch_size, worker_generator=generator
        )
        if shuffle
        else RankShardSampler(dataset)
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)
