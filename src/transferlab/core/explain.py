"""Any exception that escapes a job, as one line: what failed, the file or key concerned, and the fix.

The one place that does it (`explain`); the job records the line in `results.json` and on the console, and
the traceback goes to the job's `train.log` only (`log_traceback`). Errors raised inside a DataLoader
worker arrive re-wrapped with the worker's traceback in their message: the original line is recovered.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import traceback
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("transferlab")

_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.", re.M)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def explain(exc: BaseException, places: Mapping[str, str | os.PathLike | None] | None = None) -> str:
    """One line for `exc`. `places` maps config keys to the folders they name (`paths.cache_dir`,
    `hydra.run.dir`, `dataset.root`): a failing file below one of them is blamed on that key."""
    text = _worker_message(exc)  # first: a worker's re-raised error keeps its type, with a traceback inside
    if text is not None:
        return text
    cause = _transferlab_cause(exc)
    if cause is not None:
        return _one_line(str(cause))
    if isinstance(exc, OSError) and exc.errno is not None:
        return _os_error(exc, places or {})
    message = (_one_line(str(exc)) or "(no message)")[:400].rstrip(". ")
    hint = _hint(exc, message)
    return f"{type(exc).__name__}: {message}{_where(exc)}.{hint} The full traceback is in train.log."


def log_traceback(exc: BaseException) -> None:
    """The traceback into the job's log file (Hydra's `train.log`) only; on the console at debug level."""
    text = "".join(traceback.format_exception(exc))
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "Run failed:\n%s", (text,), None)
    for handler in files:
        try:
            handler.handle(record)
        except Exception:  # a full disk: the one-line error still reaches results.json and the console
            pass
    log.debug("Run failed:\n%s", text)


def _transferlab_cause(exc: BaseException) -> BaseException | None:
    """Our own error inside a library's wrapper (an OmegaConf resolver, a Hydra instantiation)."""
    from transferlab.core.errors import TransferlabError

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TransferlabError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _worker_message(exc: BaseException) -> str | None:
    """The original exception's last line, when `exc` was re-raised from a DataLoader worker."""
    text = str(exc)
    found = _WORKER.search(text)
    if not found:
        return None
    name = found.group(1)
    lines = [line for line in text.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if re.match(rf"^[\w.]*{name}: ", line)), lines[-1])
    message = last.split(": ", 1)[1] if ": " in last else last
    if name == "TransferlabError":
        return message
    return f"{name} in a data-loading worker: {message[:400]}. The full traceback is in train.log."


def _os_error(exc: OSError, places: Mapping[str, str | os.PathLike | None]) -> str:
    filename = exc.filename or ""
    key = _key_of(filename, places)
    where = f" {filename}" if filename else ""
    if exc.errno in _NO_SPACE:
        return (
            f"No space left on the device writing{where or ' the run (checkpoints, logs)'}; free some space, or point "
            f"{key or 'hydra.run.dir / paths.cache_dir'} at a larger disk, then continue with resume=true."
        )
    if exc.errno in _READ_ONLY:
        return (
            f"Cannot write{where} ({exc.strerror}); {key or 'the folder'} must be writable: choose another "
            f"{key or 'folder'} (e.g. {key or 'paths.cache_dir'}=/tmp/transferlab) or fix its permissions."
        )
    if exc.errno == errno.ELOOP:
        return f"A symbolic link loop at{where} ({key or 'a data folder'}): remove or fix the link."
    return f"{exc.strerror or type(exc).__name__}:{where}{f' (under {key})' if key else ''}."


def _key_of(filename: str, places: Mapping[str, str | os.PathLike | None]) -> str:
    if not filename:
        return ""
    path = Path(os.path.abspath(filename))
    best = ""
    best_len = -1
    for key, folder in places.items():
        if not folder:
            continue
        root = Path(os.path.abspath(folder))
        if (path == root or root in path.parents) and len(root.parts) > best_len:
            best, best_len = key, len(root.parts)
    return best


def _hint(exc: BaseException, message: str) -> str:
    lowered = message.lower()
    if "api_key not configured" in lowered or ("wandb" in type(exc).__module__ and "api key" in lowered):
        return (
            " W&B is online but has no key: run `wandb login`, set WANDB_API_KEY, or keep it offline "
            "(logger.wandb.mode=offline, the default, or WANDB_MODE=offline) and `wandb sync` later."
        )
    return ""


def _where(exc: BaseException) -> str:
    """' (raised in pkg/module.py:LINE)': the innermost frame, for a bug report."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if not frames:
        return ""
    frame = frames[-1]
    parts = Path(frame.filename).parts
    short = "/".join(parts[-3:]) if len(parts) >= 3 else frame.filename
    return f" (raised in {short}:{frame.lineno})"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
