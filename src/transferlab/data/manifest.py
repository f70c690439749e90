"""What is known about every file of a dataset root, so a run does not read the data again to set up.

One manifest per root, under `paths.cache_dir/manifests/`: for each file its size, mtime (ns), content
sha256 and how far it was verified as an image. Setting up a split is then one `stat` per file: a file
whose size and mtime match its entry is not opened. New or changed files are read, hashed and verified
in parallel threads (I/O-bound), with a progress bar, and the manifest is updated atomically under a
`filelock`, so a hundred sweep jobs starting together read the data once between them.

`hash="content"` hashes the bytes (provenance survives copies and touches); `hash="stat"` uses size and
mtime only (no read at all, for huge datasets: a touched file counts as changed). `verify="full"` decodes
each image once, `"header"` checks that PIL can open it, `"none"` trusts the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from PIL import Image
from rich.progress import Progress

from transferlab.core.atomic import atomic_open
from transferlab.core.errors import TransferlabError

log = logging.getLogger(__name__)
VERIFY_LEVELS = {"none": 0, "header": 1, "full": 2}
HASH_MODES = ("content", "stat")
FORMAT = "transferlab-manifest 1"
PROGRESS_FROM = 2000  # files to read before a progress bar is worth showing


@dataclass
class Entry:
    size: int
    mtime_ns: int
    sha256: str  # "" until the content was read
    verified: int  # VERIFY_LEVELS value reached


class Manifest:
    """The manifest of one dataset root (see the module docstring)."""

    def __init__(self, root: Path, cache_dir: str | os.PathLike | None):
        """`cache_dir` None: nothing is remembered (every setup reads what it needs)."""
        self.root = Path(root).resolve()
        self._prefix = str(self.root) + os.sep
        name = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / f"{self.root.name}-{name}.tsv" if cache_dir else None
        self.read = 0  # files whose bytes this manifest read (0 on a warm start)

    @property
    def lock(self) -> contextlib.AbstractContextManager:
        """A lock on the cache file, made on use (the manifest is pickled to DDP ranks; a lock is not)."""
        return _Lock(str(self.path) + ".lock") if self.path else contextlib.nullcontext()

    def digests(
        self, files: Sequence[Path], verify: str = "full", hash: str = "content"
    ) -> dict[Path, bytes]:
        """A digest per file (content or size+mtime), after reading only what changed since last time."""
        if verify not in VERIFY_LEVELS:
            raise TransferlabError(f"dataset.verify={verify} must be one of {', '.join(VERIFY_LEVELS)}.")
        if hash not in HASH_MODES:
            raise TransferlabError(f"dataset.hash={hash} must be one of {', '.join(HASH_MODES)}.")
        level = VERIFY_LEVELS[verify]
        stats = {f: os.stat(f) for f in files}
        keys = {f: self._key(f) for f in files}
        entries = self._load()
        todo = [f for f in files if not _fresh(entries.get(keys[f]), stats[f], level, hash)]
        if todo:
            with self.lock:  # parallel jobs: one reads, the others find its entries
                entries = self._load()
                todo = [f for f in files if not _fresh(entries.get(keys[f]), stats[f], level, hash)]
                if todo:
                    for f, entry in zip(todo, self._inspect(todo, stats, level, hash), strict=True):
                        entries[keys[f]] = entry
                    self._save(entries)
        out = {}
        for f in files:
            entry = entries[keys[f]]
            out[f] = bytes.fromhex(entry.sha256) if hash == "content" else _stat_digest(entry)
        return out

    def _key(self, path: str | Path) -> str:
        path = str(path)
        prefix = self._prefix
        return path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, self.root)

    def _inspect(self, files: list[Path], stats: dict, level: int, hash: str) -> list[Entry]:
        def one(path: str | Path) -> Entry:
            st = stats[path]
            read = hash == "content" or level == VERIFY_LEVELS["full"]
            data = Path(path).read_bytes() if read else None
            _verify(path, data, level)
            sha = hashlib.sha256(data).hexdigest() if hash == "content" and data is not None else ""
            return Entry(st.st_size, st.st_mtime_ns, sha, level)

        self.read += len(files)
        workers = min(32, 4 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            if len(files) < PROGRESS_FROM:
                return list(pool.map(one, files))
            with Progress(transient=True) as progress:
                task = progress.add_task(
                    f"Reading {len(files)} new or changed files of {self.root}", total=len(files)
                )
                results = []
                for entry in pool.map(one, files):
                    results.append(entry)
                    progress.advance(task)
                return results

    def _load(self) -> dict[str, Entry]:
        if self.path is None or not self.path.is_file():
            return {}
        with open(self.path) as f:
            if f.readline().rstrip("\n") != FORMAT:
                return {}
            entries = {}
            for line in f:
                key, size, mtime, sha, verified = line.rstrip("\n").split("\t")
                entries[key] = Entry(int(size), int(mtime), sha, int(verified))
        return entries

    def _save(self, entries: dict[str, Entry]) -> None:
        if self.path is None:
            return
        try:
            with atomic_open(self.path, "w") as f:
                f.write(FORMAT + "\n")
                for key in sorted(entries):
                    e = entries[key]
                    f.write(f"{key}\t{e.size}\t{e.mtime_ns}\t{e.sha256}\t{e.verified}\n")
        except OSError as exc:  # read-only or full: the next run reads again, nothing else is lost
            log.warning(
                "Cannot write the data manifest %s (%s): continuing without it.",
                self.path,
                exc.strerror or exc,
            )


class _Lock:
    """`FileLock` that does without when its folder cannot be written (the manifest is then not kept)."""

    def __init__(self, path: str):
        self.lock = FileLock(path)

    def __enter__(self) -> None:
        try:
            Path(self.lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OSError:
            self.lock = None

    def __exit__(self, *exc: object) -> None:
        if self.lock is not None:
            self.lock.release()


def _fresh(entry: Entry | None, st: os.stat_result, level: int, hash: str) -> bool:
    return (
        entry is not None
        and entry.size == st.st_size
        and entry.mtime_ns == st.st_mtime_ns
        and entry.verified >= level
        and (hash == "stat" or bool(entry.sha256))
    )


def _stat_digest(entry: Entry) -> bytes:
    return hashlib.sha256(f"{entry.size}:{entry.mtime_ns}".encode()).digest()


def _verify(path: Path, data: bytes | None, level: int) -> None:
    if level == VERIFY_LEVELS["none"]:
        return
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            if level == VERIFY_LEVELS["full"]:
                image.verify()
    except Exception as exc:
        raise TransferlabError(
            f"Corrupt image {path} ({type(exc).__name__}: {exc}); remove or replace it "
            "(or set dataset.verify=header or none to check less)."
        ) from None
