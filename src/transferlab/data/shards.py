"""WebDataset shards (`dataset=webdataset`): data larger than one disk, streamed from local paths or any
URL webdataset opens (http(s), s3 through `pipe:`, ...).

`transferlab-pack` (`transferlab.data.pack`) writes the tar shards and their `index.json`. The index
lets class subsets, `samples_per_class`, the seeded validation split and the split hashes run through
the shared `DataModule` (a `ShardSource` is a `StreamingSource`: it lists its items from the index but
cannot read one alone); the shards are then streamed, keeping the selected keys, with a per-epoch
seeded shuffle. Under DDP each rank streams its own shards and every rank trains the same number of
samples per epoch; evaluation scores each sample exactly once.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from transferlab.core.errors import TransferlabError
from transferlab.data.datamodule import DataModule
from transferlab.data.folders import digest_rows
from transferlab.data.loaders import distributed
from transferlab.data.pack import INDEX, main, pack  # noqa: F401 - importable from here as before
from transferlab.data.sources import DataSource, FileChecks, StreamingSource

log = logging.getLogger(__name__)
SHUFFLE_BUFFER = 256


class ShardSource(StreamingSource):
    """The samples of WebDataset shards written by `transferlab-pack` (`urls`: their folder or base URL),
    listed from its `index.json` and streamed."""

    name = "webdataset"

    def __init__(self, urls: str):
        self.urls = str(urls).rstrip("/")
        local = Path(self.urls).expanduser()
        self.root = local.resolve() if local.exists() else local
        self.index: dict[str, Any] = {}
        self._by_key: dict[str, dict[str, Any]] = {}

    def prepare(self) -> None:
        import webdataset as wds

        try:
            with wds.gopen(f"{self.urls}/{INDEX}") as f:
                self.index = json.load(f)
        except Exception as exc:
            raise TransferlabError(
                f"dataset.urls={self.urls}: cannot read {INDEX} ({type(exc).__name__}: {exc}); point it at the "
                "output folder (or base URL) of transferlab-pack."
            ) from None
        self._by_key = {s["key"]: s for samples in self.index["splits"].values() for s in samples}

    def items(self, split: str) -> dict[str, list[Any]] | None:
        samples = self.index["splits"].get(split)
        if samples is None:
            if split != "val":
                raise TransferlabError(
                    f"dataset.urls={self.urls} has no {split} shards (transferlab-pack wrote {list(self.index['splits'])})."
                )
            return None
        out: dict[str, list[str]] = {}
        for s in samples:
            out.setdefault(s["class"], []).append(s["key"])
        return {c: out[c] for c in self.index["classes"] if c in out}

    def where(self, split: str) -> str:
        return f"the {split} shards of {self.urls}"

    def digests(self, keys: list[Any], checks: FileChecks) -> np.ndarray:
        """The packed files' content sha256, from the index (no shard is read)."""
        return digest_rows([bytes.fromhex("".join(self._by_key[k]["sha256"] for k in keys))], width=32)

    def relative(self, key: Any) -> str:
        return self._by_key[key]["path"]  # as the image folder names it: the same files hash the same

    def stream(self, split: str, samples, transform, seed: int, shuffle: bool) -> ShardStream:
        wanted = dict(samples)  # key -> label
        source = "train" if split == "val" and "val" not in self.index["splits"] else split
        per_shard = Counter(self._by_key[k]["shard"] for k in wanted)
        shards = sorted(per_shard)
        return ShardStream(
            urls=[f"{self.urls}/{self.index['shards'][source][i]}" for i in shards],
            counts=[per_shard[i] for i in shards],
            wanted=wanted,
            transform=transform,
            seed=seed,
            shuffle=shuffle,
        )

    def loader(self, stream: ShardStream, position: tuple[int, int] | None, **kwargs: Any) -> DataLoader:
        seed = kwargs.pop("seed")
        if position is not None:
            stream.set_epoch(position[0])
            stream.skip = position[1] * kwargs["batch_size"]
        kwargs["persistent_workers"] = False  # workers take the stream's new epoch when they start
        return ShardLoader(stream, generator=torch.Generator().manual_seed(seed), **kwargs)

    def describe(self) -> dict[str, Any]:
        return {"format": "webdataset", "urls": self.urls}


class ShardDataModule(DataModule):
    """`dataset=webdataset`: the shared `DataModule` over a `ShardSource`."""

    source_type: ClassVar[type[DataSource]] = ShardSource

    def __init__(self, urls: str, **settings: Any):
        settings.pop("root", None)  # the YAML's `root: ${.urls}`: the source's own URL decides
        settings.setdefault("name", "webdataset")
        super().__init__(ShardSource(urls), **settings)
        if self.persistent_workers:
            log.warning(
                "dataset.persistent_workers=true is not used with shards: loader workers restart each epoch "
                "to stream it in that epoch's seeded order."
            )

    @property
    def urls(self) -> str:
        return self.source.urls


class ShardLoader(DataLoader):
    """A DataLoader over a `ShardStream` whose `sampler` passes Lightning's per-epoch `set_epoch` on to
    the stream: Lightning calls it on samplers only, and an IterableDataset's loader has none of its
    own, so every epoch would otherwise stream in the first epoch's order (and a resumed run in another)."""

    def __init__(self, stream: ShardStream, **kwargs: Any):
        super().__init__(stream, **kwargs)
        object.__setattr__(self, "sampler", _EpochToStream(self.sampler, stream))  # DataLoader forbids `=`


class _EpochToStream(Sampler):
    def __init__(self, sampler: Sampler, stream: ShardStream):
        self.sampler, self.stream = sampler, stream

    def __iter__(self) -> Iterator:
        return iter(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)


class ShardStream(IterableDataset):
    """The selected samples of some shards, streamed. Training: shard order and a shuffle buffer seeded
    by (seed, epoch), and under DDP the same number of samples on every rank (the smallest rank's);
    evaluation: in order, each sample on exactly one rank."""

    def __init__(self, urls, counts, wanted, transform, seed: int, shuffle: bool):
        self.urls, self.counts, self.wanted = list(urls), list(counts), wanted
        self.transform, self.seed, self.shuffle = transform, int(seed), shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _mine(self) -> list[int]:
        """Shard positions this rank and this DataLoader worker read."""
        rank, world = distributed()
        order = list(range(len(self.urls)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        mine = order[rank::world]
        worker = get_worker_info()
        return mine[worker.id :: worker.num_workers] if worker else mine

    def __len__(self) -> int:
        rank, world = distributed()
        if world == 1:
            return sum(self.counts)
        if self.shuffle:
            return self._per_rank()
        return sum(self.counts[i] for i in range(len(self.urls))[rank::world])

    def _per_rank(self) -> int:
        """Training under DDP: every rank the same number of samples (DDP needs equal steps)."""
        _, world = distributed()
        order = list(range(len(self.urls)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return min(sum(self.counts[i] for i in order[r::world]) for r in range(world))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        import webdataset as wds

        rng = random.Random(self.seed * 1_000_003 + self.epoch + 1)
        limit = self._per_rank() if self.shuffle and distributed()[1] > 1 else math.inf
        skip, self.skip = self.skip, 0
        produced = 0
        buffer: list[tuple[Any, int]] = []
        for i in self._mine():
            for sample in wds.WebDataset(self.urls[i], shardshuffle=False, empty_check=False):
                label = self.wanted.get(sample["__key__"])
                if label is None:
                    continue
                image_bytes = next(v for k, v in sample.items() if not k.startswith("__") and k != "cls")
                item = (image_bytes, label)
                if not self.shuffle:
                    yield self._decode(item)
                    continue
                buffer.append(item)
                if len(buffer) >= SHUFFLE_BUFFER:
                    produced, done = yield from self._emit(
                        buffer.pop(rng.randrange(len(buffer))), produced, skip, limit
                    )
                    if done:
                        return
        rng.shuffle(buffer)
        for item in buffer:
            produced, done = yield from self._emit(item, produced, skip, limit)
            if done:
                return

    def _emit(self, item, produced: int, skip: int, limit: float):
        produced += 1
        if produced > limit:
            return produced, True
        if produced > skip:
            yield self._decode(item)
        return produced, False

    def _decode(self, item: tuple[bytes, int]) -> tuple[torch.Tensor, int]:
        data, label = item
        with Image.open(io.BytesIO(data)) as image:
            return self.transform(image.convert("RGB")), label


if __name__ == "__main__":  # python -m transferlab.data.shards, as before
    main()
