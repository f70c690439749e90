"""One lock for every directory transferlab owns (a run, a sweep, a report): one live owner at a time.

An exclusive `filelock` on `<dir>/.lock`; the OS drops it when the process dies, so a killed owner never
blocks the next one. Who holds it (pid, host, since when) is written into the lock file, for the refusal
message (a run's own `results.json` says it too).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from transferlab.core.errors import TransferlabError
from transferlab.core.names import RESULTS_FILE

LOCK_FILE = ".lock"


class DirectoryLock:
    """`with DirectoryLock(dir, "run")`: refuse (one line) when another owner holds `dir`."""

    def __init__(self, directory: str | Path, what: str = "run", fix: str = ""):
        self.directory = Path(directory).resolve()
        self.what = what
        self.fix = fix or f"wait for it to finish, or give this {what} its own directory"
        self.lock = FileLock(self.directory / LOCK_FILE)

    def acquire(self) -> DirectoryLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise TransferlabError(
                f"{self.directory} is in use by another {self.what}{holder(self.directory)}; {self.fix}."
            ) from None
        _write_owner(self.lock)
        return self

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder(directory: Path) -> str:
    """' (pid N on HOST, started TIME)' from a run's results.json or the lock file, or '' when unknown."""
    for name, since in ((RESULTS_FILE, "started_at"), (LOCK_FILE, "since")):
        try:
            owner = json.loads((directory / name).read_text())
            return f" (pid {int(owner['pid'])} on {str(owner['host'])[:64]}, started {time.ctime(float(owner[since]))})"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return ""


def _write_owner(lock: FileLock) -> None:
    """Who holds `lock`, written into the lock file itself (truncated by every new owner)."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, json.dumps({"pid": os.getpid(), "host": platform.node(), "since": time.time()}).encode(), 0
        )
