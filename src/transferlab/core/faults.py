"""Fault injection: crash the process at a named point, as a power cut or `kill -9` would.

    TRANSFERLAB_CRASH_AT=<point>[@<n>][,<point>[@<n>]...]

exits the process with `os._exit(137)` (no cleanup, no flushing) the n-th time (default: the first) it
reaches <point>. Tests use it to prove that a run killed anywhere resumes exactly. Points:

    train_step, validation_step, test_step    inside the step (n counts steps of this process)
    checkpoint                                right after a checkpoint file is in place
    after_fit                                 between fit and test
    write:<file name>                         the new content is written but has not replaced the file
    csv_append                                half of a metrics.csv row is written
    source:<point>                            any point above, during source pretraining

    TRANSFERLAB_FILL_DISK_AT=<point>[@<n>]:<folder>

fills the file system holding <folder> (a file of zeros until the disk says it is full) the n-th time
<point> is reached, and the process goes on: a disk that fills up during a run, for real.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterator

ENV = "TRANSFERLAB_CRASH_AT"
FILL_ENV = "TRANSFERLAB_FILL_DISK_AT"
_reached: Counter[str] = Counter()
_scope: list[str] = []


def crash_point(name: str, before: Callable[[], None] | None = None) -> None:
    """Die here if `TRANSFERLAB_CRASH_AT` names this point (after running `before`, e.g. a partial write)."""
    spec = os.environ.get(ENV)
    fill = os.environ.get(FILL_ENV)
    if not spec and not fill:
        return
    point = "".join(_scope) + name
    _reached[point] += 1
    if fill:
        _maybe_fill(fill, point)
    if not spec:
        return
    for item in spec.split(","):
        wanted, _, nth = item.strip().partition("@")
        if wanted == point and _reached[point] == int(nth or 1):
            if before is not None:
                before()
            os._exit(137)


@contextlib.contextmanager
def scope(prefix: str) -> Iterator[None]:
    """Points reached inside are named `<prefix><point>` (e.g. `source:` for source pretraining)."""
    _scope.append(prefix)
    try:
        yield
    finally:
        _scope.pop()


def _maybe_fill(spec: str, point: str) -> None:
    wanted, _, folder = spec.partition(":")
    wanted, _, nth = wanted.partition("@")
    if wanted != point or _reached[point] != int(nth or 1):
        return
    block = b"\0" * (1 << 16)
    with contextlib.suppress(OSError), open(os.path.join(folder, ".fill"), "ab") as f:
        while True:
            f.write(block)
            f.flush()
