"""Atomic file writes: a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from transferlab.core.faults import crash_point

TEMPORARY = ".*.tmp"  # what `atomic_open` leaves behind when the process is killed mid-write


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces `path` (a symlink there is replaced too).

    Readers see the old file or the new one, never a half-written one, even if the process is killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in `directory` and below (call it while the
    directory's lock is held, so no live writer is affected)."""
    removed = []
    for tmp in Path(directory).rglob(TEMPORARY):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
