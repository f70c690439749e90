"""A sweep directory has one live owner, as a run directory has (`transferlab.core.locks`).

Two sweeps started into the same `hydra.sweep.dir` would interleave their jobs and each count the other's
runs as its own; the second is refused before it launches anything. A Hydra callback, so it sees the sweep
directory Hydra really uses (`${now:...}` resolved once), and holds it until the multirun ends or the
process dies.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from transferlab.core.errors import TransferlabError
from transferlab.core.locks import DirectoryLock

_HELD: dict[str, DirectoryLock] = {}  # not on the callback: launchers pickle callbacks to their workers


class SweepLock(Callback):
    """Hydra callback: lock `hydra.sweep.dir` at multirun start, release it at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        lock = DirectoryLock(
            Path(str(config.hydra.sweep.dir)),
            "sweep",
            "wait for it to finish, or give this sweep its own directory (another hydra.sweep.dir)",
        )
        try:
            _HELD[str(lock.directory)] = lock.acquire()
        except TransferlabError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        lock = _HELD.pop(str(Path(str(config.hydra.sweep.dir)).resolve()), None)
        if lock is not None:
            lock.release()
