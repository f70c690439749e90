"""What is known about every file of a dataset root, so a run does not read the data again to set up.

One manifest per root, under `paths.cache_dir/manifests/`: for each file its size, mtime (ns), content
sha256 and how far it was verified as an image, as columns in one `.npz` file (loaded in milliseconds,
compared as arrays). Setting up a split is then one `stat` per file: a file whose size and mtime match
its entry is not opened. New or changed files are read, hashed and verified in parallel threads
(I/O-bound), with a progress bar, and the manifest is updated atomically under a `filelock`, so a
hundred sweep jobs starting together read the data once between them.

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
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image
from rich.progress import Progress

from transferlab.core.atomic import atomic_open
from transferlab.core.errors import TransferlabError

log = logging.getLogger(__name__)
VERIFY_LEVELS = {"none": 0, "header": 1, "full": 2}
HASH_MODES = ("content", "stat")
RECHECK_MODES = ("files", "folders")
RACY_NS = 1_000_000_000  # a folder changed this close to when it was seen is not trusted (coarse clocks)
FORMAT = 4  # stored in the file; another number is ignored (read again). 4: names joined by NUL
SEPARATOR = "\0"  # the one character a POSIX file name cannot hold (a newline can)
PROGRESS_FROM = 2000  # files to read before a progress bar is worth showing


@dataclass
class Columns:
    """Manifest entries as columns, row i describing `keys[i]` (a path relative to the root)."""

    keys: list[str]
    size: np.ndarray  # int64
    mtime_ns: np.ndarray  # int64
    sha256: np.ndarray  # (n, 32) uint8; zeros until the content was read
    verified: np.ndarray  # uint8, the VERIFY_LEVELS value reached
    hashed: np.ndarray  # bool, whether sha256 holds the content's hash
    folders: dict[str, tuple[int, int]] = field(default_factory=dict)  # folder -> (mtime_ns, seen at ns)

    @classmethod
    def empty(cls, n: int = 0) -> Columns:
        return cls(
            [""] * n,
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
            np.zeros((n, 32), np.uint8),
            np.zeros(n, np.uint8),
            np.zeros(n, bool),
        )

    def take(self, rows: np.ndarray) -> Columns:
        return Columns(
            [self.keys[i] for i in rows],
            self.size[rows],
            self.mtime_ns[rows],
            self.sha256[rows],
            self.verified[rows],
            self.hashed[rows],
        )

    def then(self, other: Columns) -> Columns:
        """These rows followed by `other`'s."""
        return Columns(
            self.keys + other.keys,
            *(np.concatenate([a, b]) for a, b in zip(self.arrays(), other.arrays(), strict=True)),
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.size, self.mtime_ns, self.sha256, self.verified, self.hashed

    def check(self) -> None:
        """`ValueError` unless every column has one row per key, with the dtype and shape it should."""
        n = len(self.keys)
        expected = (
            (np.int64, (n,)),
            (np.int64, (n,)),
            (np.uint8, (n, 32)),
            (np.uint8, (n,)),
            (np.bool_, (n,)),
        )
        for name, array, (dtype, shape) in zip(
            ("size", "mtime_ns", "sha256", "verified", "hashed"), self.arrays(), expected, strict=True
        ):
            if array.dtype != dtype or array.shape != shape:
                raise ValueError(
                    f"column {name} is {array.dtype}{array.shape}, expected {np.dtype(dtype)}{shape}"
                )


class Manifest:
    """The manifest of one dataset root (see the module docstring)."""

    def __init__(self, root: Path, cache_dir: str | os.PathLike | None):
        """`cache_dir` None: nothing is remembered (every setup reads what it needs)."""
        self.root = Path(root).resolve()
        self._prefix = str(self.root) + os.sep
        name = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / f"{self.root.name}-{name}.npz" if cache_dir else None
        self.read = 0  # files whose bytes this manifest read (0 on a warm start)

    @property
    def lock(self) -> contextlib.AbstractContextManager:
        """A lock on the cache file, made on use (the manifest is pickled to DDP ranks; a lock is not)."""
        return _Lock(str(self.path) + ".lock") if self.path else contextlib.nullcontext()

    def digests(
        self, files: Sequence[str], verify: str = "full", hash: str = "content", recheck: str = "files"
    ) -> np.ndarray:
        """One digest row per file, in order: the content's sha256 (32 bytes) or its size and mtime (16
        bytes), after reading only the files that changed since the manifest last saw them.

        `recheck="files"` stats every file (an edit in place is seen); `"folders"` stats each folder and
        only the files of folders whose mtime changed (files added, removed or replaced by a rename):
        for millions of files on network storage, where a stat per file per job is the cost.
        """
        for key, value, allowed in (
            ("verify", verify, VERIFY_LEVELS),
            ("hash", hash, HASH_MODES),
            ("recheck", recheck, RECHECK_MODES),
        ):
            if value not in allowed:
                raise TransferlabError(f"dataset.{key}={value} must be one of {', '.join(allowed)}.")
        files = [str(f) for f in files]
        now = Columns.empty(len(files))
        skip = len(self._prefix)  # keys: paths relative to the root
        now.keys = [f[skip:] if f.startswith(self._prefix) else self._key(f) for f in files]
        stored = self._load()
        if recheck == "folders":
            now.folders = _folder_times(self.root, now.keys)
        self._stat(files, now, stored)
        level = VERIFY_LEVELS[verify]
        todo = _recall(stored, now, level, hash)
        if len(todo) or _new_folder_times(stored.folders, now.folders):
            with self.lock:  # parallel jobs: one reads, the others find its entries
                stored = self._load()
                todo = _recall(stored, now, level, hash)
                if len(todo):
                    self._inspect([files[i] for i in todo], now, todo, level, hash)
                merged = now.then(stored.take(_rows_not_in(stored, now)))
                merged.folders = {**stored.folders, **now.folders}
                self._save(merged)
        if hash == "content":
            return now.sha256
        return np.stack([now.size, now.mtime_ns], axis=1).view(np.uint8)

    def _key(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def _stat(self, files: list[str], now: Columns, stored: Columns) -> None:
        """Size and mtime of each file into `now`: a stat each, except files the manifest knows in a
        folder whose mtime it recorded unchanged (`now.folders` is filled only with recheck=folders)."""
        trusted = np.zeros(len(files), bool)
        if now.folders:
            same = {
                name for name, (mtime, _) in now.folders.items() if _trusted(stored.folders.get(name), mtime)
            }
            rows = _rows_in(stored, now)
            in_same = np.fromiter((k.rpartition(os.sep)[0] in same for k in now.keys), bool, len(files))
            trusted = in_same & (rows >= 0)
            now.size[trusted] = stored.size[rows[trusted]]
            now.mtime_ns[trusted] = stored.mtime_ns[rows[trusted]]
        todo = np.flatnonzero(~trusted)
        stats = [os.stat(files[i]) for i in todo]  # the one system call per file a warm start costs
        now.size[todo] = np.fromiter((st.st_size for st in stats), np.int64, len(stats))
        now.mtime_ns[todo] = np.fromiter((st.st_mtime_ns for st in stats), np.int64, len(stats))

    def _inspect(self, files: list[str], now: Columns, rows: np.ndarray, level: int, hash: str) -> None:
        """Read, verify and hash `files` (rows `rows` of `now`) in parallel threads; fill their entries."""
        read = hash == "content" or level == VERIFY_LEVELS["full"]
        if not read and level == VERIFY_LEVELS["none"]:  # size and mtime are all there is to know
            return

        def one(path: str) -> bytes | None:
            data = Path(path).read_bytes() if read else None
            _verify(path, data, level)
            return hashlib.sha256(data).digest() if hash == "content" and data is not None else None

        self.read += len(files) if read else 0
        workers = min(32, 4 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            if len(files) < PROGRESS_FROM:
                digests = list(pool.map(one, files))
            else:
                with Progress(transient=True) as progress:
                    task = progress.add_task(
                        f"Reading {len(files)} new or changed files of {self.root}", total=len(files)
                    )
                    digests = []
                    for digest in pool.map(one, files):
                        digests.append(digest)
                        progress.advance(task)
        now.verified[rows] = np.maximum(now.verified[rows], level)
        if hash == "content":
            now.sha256[rows] = np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32)
            now.hashed[rows] = True

    def _load(self) -> Columns:
        if self.path is None or not self.path.is_file():
            return Columns.empty()
        try:
            with np.load(self.path) as z:
                if int(z["format"]) != FORMAT:
                    return Columns.empty()
                keys = _split(z["keys"], len(z["size"]))
                times = zip(z["folder_mtime_ns"].tolist(), z["folder_seen_ns"].tolist(), strict=True)
                folders = dict(zip(_split(z["folders"], len(z["folder_mtime_ns"])), times, strict=True))
                columns = Columns(
                    keys, z["size"], z["mtime_ns"], z["sha256"], z["verified"], z["hashed"], folders
                )
                columns.check()
                return columns
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
            # damaged or foreign: read the data again (the manifest is rewritten with what is read)
            log.warning("Ignoring the unreadable data manifest %s (%s); rebuilding it.", self.path, exc)
            return Columns.empty()

    def _save(self, columns: Columns) -> None:
        if self.path is None:
            return
        folders = sorted(columns.folders)
        try:
            with atomic_open(self.path, "wb") as f:
                np.savez(
                    f,
                    format=np.array(FORMAT),
                    keys=_joined(columns.keys),
                    size=columns.size,
                    mtime_ns=columns.mtime_ns,
                    sha256=columns.sha256,
                    verified=columns.verified,
                    hashed=columns.hashed,
                    folders=_joined(folders),
                    folder_mtime_ns=np.array([columns.folders[f][0] for f in folders], np.int64),
                    folder_seen_ns=np.array([columns.folders[f][1] for f in folders], np.int64),
                )
        except OSError as exc:  # read-only or full: the next run reads again, nothing else is lost
            log.warning(
                "Cannot write the data manifest %s (%s): continuing without it.",
                self.path,
                exc.strerror or exc,
            )


def _joined(names: list[str]) -> np.ndarray:
    return np.frombuffer(SEPARATOR.join(names).encode("utf-8", "surrogateescape"), np.uint8)


def _split(joined: np.ndarray, count: int) -> list[str]:
    """The names `_joined` stored; `ValueError` unless there are `count` of them."""
    if joined.dtype != np.uint8 or joined.ndim != 1:
        raise ValueError(f"names column is {joined.dtype}{joined.shape}, expected uint8 bytes")
    names = joined.tobytes().decode("utf-8", "surrogateescape").split(SEPARATOR) if count else []
    if len(names) != count:
        raise ValueError(f"{len(names)} names for {count} rows")
    return names


def _folder_times(root: Path, keys: list[str]) -> dict[str, tuple[int, int]]:
    """Folder (relative) -> (its mtime, when it was looked at) for the folders holding `keys`."""
    seen = time.time_ns()
    names = {k.rpartition(os.sep)[0] for k in keys}
    return {name: (os.stat(os.path.join(root, name)).st_mtime_ns, seen) for name in names}


def _trusted(record: tuple[int, int] | None, mtime: int) -> bool:
    """Whether a folder is as recorded: same mtime, recorded long enough after that mtime that a change
    within the same clock tick cannot hide (as git does with racily clean files)."""
    return record is not None and record[0] == mtime and mtime < record[1] - RACY_NS


def _new_folder_times(stored: dict, now: dict) -> bool:
    return any(not _trusted(stored.get(name), mtime) for name, (mtime, _) in now.items())


def _rows_in(stored: Columns, now: Columns) -> np.ndarray:
    """For each key of `now`, its row in `stored`, or -1."""
    if stored.keys == now.keys:  # the usual warm start: the same files in the same order
        return np.arange(len(now.keys))
    index = dict(zip(stored.keys, range(len(stored.keys)), strict=True))
    return np.fromiter((index.get(k, -1) for k in now.keys), np.int64, len(now.keys))


def _rows_not_in(stored: Columns, now: Columns) -> np.ndarray:
    """Rows of `stored` whose keys `now` does not have (kept when the manifest is saved)."""
    return np.setdiff1d(np.arange(len(stored.keys)), _rows_in(stored, now))


def _recall(stored: Columns, now: Columns, level: int, hash: str) -> np.ndarray:
    """Copy what `stored` knows about the unchanged files of `now` (same size and mtime) into `now`;
    return the rows of `now` that must be read."""
    rows = _rows_in(stored, now)
    found = rows >= 0
    at = rows[found]
    same = np.zeros(len(now.keys), bool)
    same[found] = (stored.size[at] == now.size[found]) & (stored.mtime_ns[at] == now.mtime_ns[found])
    source = rows[same]
    now.sha256[same] = stored.sha256[source]
    now.verified[same] = stored.verified[source]
    now.hashed[same] = stored.hashed[source]
    enough = same & (now.verified >= level) & (now.hashed | (hash == "stat"))
    return np.flatnonzero(~enough)


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


def _verify(path: str, data: bytes | None, level: int) -> None:
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
