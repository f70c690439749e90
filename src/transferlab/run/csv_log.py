"""A CSV metrics log that survives being killed at any moment, and continues after a resume.

Lightning's `CSVLogger` deletes an existing `metrics.csv` when it starts (PR #19446) and fixes its header
from the first rows, so keys that appear later (a resumed run, `trainer.test`, another rank under
`ddp_spawn`) fail with "dict contains fields not in fieldnames". This logger instead:

- appends each row at once and flushes it (a killed process loses at most the row being written);
- grows the header when a new key appears, by rewriting the file atomically (temporary file + rename);
- keeps no state in memory that the file does not hold, so a copy in another process (`ddp_spawn`)
  writes to the same log correctly;
- on resume, `truncate(step)` cuts the log back to the rows logged before the checkpoint's global step
  (the resumed run logs the later ones again) and drops a half-written last line, so every row is
  there exactly once (`EpochEndCheckpoint` saves an epoch only after its rows are written).

Only rank 0 writes.
"""

from __future__ import annotations

import csv
import io
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

import yaml
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers.logger import Logger

from transferlab.core.atomic import atomic_open
from transferlab.core.faults import crash_point

METRICS_FILE = "metrics.csv"
FIXED_COLUMNS = ["epoch", "step"]


class CrashSafeCSVLogger(Logger):
    """`<save_dir>/<name>/metrics.csv` (one row per `log_metrics` call) and `hparams.yaml`."""

    def __init__(self, save_dir: str | os.PathLike, name: str = "csv", **_: Any):
        super().__init__()
        self._save_dir = str(save_dir)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return str(Path(self._save_dir) / self._name)

    @property
    def log_dir(self) -> str:
        return self.root_dir

    @property
    def experiment(self) -> CrashSafeCSVLogger:
        return self

    @property
    def path(self) -> Path:
        return Path(self.root_dir) / METRICS_FILE

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        params = vars(params) if isinstance(params, Namespace) else dict(params)
        with atomic_open(Path(self.root_dir) / "hparams.yaml", "w") as f:
            yaml.safe_dump(_plain(params), f, sort_keys=False)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {k: _number(v) for k, v in metrics.items()}
        row["step"] = step if step is not None else row.get("step")
        header = _header(self.path) or FIXED_COLUMNS
        columns = header + sorted(k for k in row if k not in header)
        if columns != _header(self.path):  # a new key: rewrite with the grown header, atomically
            self._rewrite(columns, _read(self.path)[1])
        line = _line(columns, row)
        with open(self.path, "a", newline="") as f:
            crash_point("csv_append", before=lambda: (f.write(line[: len(line) // 2]), f.flush()))
            f.write(line)
            f.flush()

    @rank_zero_only
    def truncate(self, before_step: int) -> None:
        """Keep the rows logged before optimizer step `before_step` (a resumed run: the checkpoint's
        global step; it logs the later ones again), and drop a half-written last line."""
        header, rows = _read(self.path)
        kept = [r for r in rows if r.get("step") not in (None, "") and float(r["step"]) < before_step]
        if header and (len(kept) != len(rows) or not _ends_cleanly(self.path)):
            self._rewrite(header, kept)

    def _rewrite(self, columns: list[str], rows: list[dict[str, str]]) -> None:
        with atomic_open(self.path, "w") as f:
            f.write(_line(columns, dict(zip(columns, columns, strict=True))))
            for row in rows:
                f.write(_line(columns, row))

    def save(self) -> None:
        """Rows are written as they come: nothing is buffered."""

    def finalize(self, status: str) -> None:
        """Nothing to close."""


def _header(path: Path) -> list[str]:
    """The columns on the file's first line (empty when there is no complete first line)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        first = f.readline()
    return next(csv.reader([first])) if first.endswith("\n") else []


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, complete rows); a last line without its newline (a crash mid-write) is not a row."""
    if not path.is_file():
        return [], []
    text = path.read_text()
    if not text:
        return [], []
    lines = text.split("\n")
    complete = lines[:-1]  # what follows the last newline is unfinished (or empty)
    if not complete:
        return [], []
    header = next(csv.reader([complete[0]]))
    rows = [dict(zip(header, values, strict=False)) for values in csv.reader(complete[1:]) if values]
    return header, rows


def _ends_cleanly(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _line(columns: list[str], row: dict[str, Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        ["" if row.get(c) is None else row.get(c) for c in columns]
    )
    return buffer.getvalue()


def _number(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
