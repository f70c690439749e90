"""The report's files in a folder it may share with others: it replaces only files it wrote itself.

Each file is written atomically (a half-written report never replaces a whole one, Ctrl-C included) and its
sha256 is recorded in `.transferlab-report.json`. A file already at one of those paths that the record does
not vouch for (another tool's `report.md`, an edited copy) is moved into `.replaced-<time>-<pid>/` first,
never overwritten, as `overwrite=true` does for runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from transferlab.core.atomic import atomic_open

RECORD = ".transferlab-report.json"
_current: contextvars.ContextVar[ReportFiles | None] = contextvars.ContextVar("report_files", default=None)


class ReportFiles:
    """What one report writes into `folder`, and what it moved aside to do so."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.written: dict[str, str] = _read_record(folder / RECORD)
        self.moved: list[Path] = []
        self._aside: Path | None = None

    @contextlib.contextmanager
    def open(self, path: Path, mode: str = "w") -> Iterator[IO]:
        """Write `path` atomically, first moving aside a file there that this report did not write."""
        self._claim(path)
        buffer = io.BytesIO() if "b" in mode else io.StringIO()
        yield buffer
        data = buffer.getvalue()
        with atomic_open(path, mode) as f:
            f.write(data)
        raw = data if isinstance(data, bytes) else data.encode()
        self.written[path.name] = hashlib.sha256(raw).hexdigest()
        self._save_record()

    @contextlib.contextmanager
    def active(self) -> Iterator[ReportFiles]:
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def _claim(self, path: Path) -> None:
        if not path.exists() and not path.is_symlink():
            return
        if path.is_file() and not path.is_symlink() and self.written.get(path.name) == _sha256(path):
            return  # ours, unchanged since we wrote it
        if self._aside is None:
            self._aside = self.folder / f".replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            self._aside.mkdir(parents=True, exist_ok=True)
        os.replace(path, self._aside / path.name)
        self.moved.append(self._aside / path.name)

    def _save_record(self) -> None:
        with atomic_open(self.folder / RECORD, "w") as f:
            json.dump(self.written, f, indent=1, sort_keys=True)


def open_output(path: Path, mode: str = "w"):
    """Open a report file for writing through the active `ReportFiles` (plain atomic write without one)."""
    files = _current.get()
    return files.open(path, mode) if files is not None else atomic_open(path, mode)


def _read_record(path: Path) -> dict[str, str]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    return {str(k): str(v) for k, v in record.items() if isinstance(v, str)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
