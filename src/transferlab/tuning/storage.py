"""Where a study lives on disk, so trials in other processes (joblib, submitit, SLURM) reach it."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

JOURNAL_FILE = "optuna.journal"


def open_storage(spec: str | Path) -> BaseStorage:
    """An Optuna storage from a database URL (`sqlite:///study.db`, `postgresql://...`) or a file
    path (an append-only journal, safe for concurrent processes on a shared filesystem)."""
    spec = str(spec)
    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    path = Path(spec).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def default_storage(sweep_dir: str | Path) -> str:
    """The journal file of a sweep directory: resuming the sweep resumes its studies."""
    return str(Path(sweep_dir).resolve() / JOURNAL_FILE)
