"""DDP ranks forked from the fork server: what crosses back from a rank (its exception, as itself)."""

from __future__ import annotations

import multiprocessing
import os
import runpy
import signal
import threading
import time
from pathlib import Path

import pytest

from transferlab.core.errors import DivergedError, TransferlabError
from transferlab.run.ranks import JobState, portable_error, rebuild


def test_a_ranks_diverged_error_reaches_the_job_as_itself():
    """Pickled as is, a DivergedError does not unpickle (its __init__ takes step, learning rate and loss);
    taken apart and rebuilt it keeps its class, message and details, so the job records `diverged`."""
    error = DivergedError("Training diverged at step 1", step=1, learning_rate=7.5, loss=1.2e11)
    back = rebuild(portable_error(error))
    assert type(back) is DivergedError and str(back) == "Training diverged at step 1"
    assert back.details == {"step": 1, "learning_rate": 7.5, "loss": 1.2e11}


class NeedsTwoArguments(Exception):
    """A user's exception whose __init__ takes more than its message (plain pickling cannot rebuild it)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


CROSSING = [  # what a rank may raise: each comes back with its class, text and attributes
    ValueError("dataset.image_size=8 is too small"),
    KeyError("backbone"),
    FileNotFoundError(2, "No such file or directory", "/data/x.png"),
    TransferlabError("strategy.trainable_stages=9: the backbone has 4 stages"),
    DivergedError("Training diverged at step 3", step=3, learning_rate=10.0, loss=float("inf")),
    NeedsTwoArguments("bad code", 7),
    RuntimeError(),
]


@pytest.mark.parametrize("error", CROSSING, ids=lambda e: type(e).__name__)
def test_each_kind_of_rank_error_reaches_the_job_as_itself(error):
    back = rebuild(portable_error(error))
    assert type(back) is type(error) and str(back) == str(error) and back.args == error.args
    assert vars(back) == vars(error)
    if isinstance(error, OSError):  # what core.explain names the file by
        assert (back.errno, back.filename) == (error.errno, error.filename)


def test_an_error_that_cannot_cross_stays_the_ranks_traceback():
    unpicklable = RuntimeError("boom")
    unpicklable.lock = threading.Lock()
    huge = ValueError("x" * 20000)  # more than a pipe's buffer: the rank's put would block
    holds_huge = RuntimeError("small")
    holds_huge.payload = b"x" * 20000
    assert portable_error(unpicklable) is None and portable_error(huge) is None
    assert portable_error(holds_huge) is None
    assert rebuild(portable_error(ValueError("small"))).args == ("small",)


STYLES = {"%": "%(levelname)s|%(name)s|%(message)s", "{": "{levelname}|{name}|{message}"}
STYLES["$"] = "${levelname}|${name}|${message}"


@pytest.mark.parametrize("style", STYLES)
def test_a_rank_writes_the_jobs_log_lines_in_the_jobs_format_style(tmp_path, style):
    """A job's file handler in any of logging's styles (dictConfig `style:`) gives rank 1 the same lines
    in its own file; a '{' format read as '%' raised 'Invalid format' in the rank, and every DDP job in a
    multirun failed."""
    import logging

    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "train.log")
    handler.setFormatter(logging.Formatter(STYLES[style], style=style))
    root.addHandler(handler)
    try:
        state = JobState.capture()
    finally:
        root.removeHandler(handler)
        handler.close()
    pid = os.fork()  # a rank restores the job's state in a process of its own
    if pid == 0:
        code = 1
        try:
            state.restore(1)
            logging.getLogger("transferlab").warning("from rank %d", 1)
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    lines = (tmp_path / "train_ddp_process_1.log").read_text().splitlines()
    assert lines == ["WARNING|transferlab|from rank 1"]


RANK = """
import os, signal, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background shell ignores it)
from transferlab.run.job_watch import interrupt_when_the_job_ends
assert interrupt_when_the_job_ends()
open(__file__ + ".pid", "w").write(str(os.getpid()))
try:
    time.sleep(60)
    outcome = "slept on"
except KeyboardInterrupt:
    outcome = "interrupted"
open(__file__ + ".end", "w").write(outcome)
"""


def test_a_rank_forked_from_the_fork_server_ends_when_its_job_process_is_killed(tmp_path):
    """A SIGTERM'd sweep took its spawned ranks with it (torch: SIGINT when the parent dies); a forked
    rank's parent is the fork server, which outlives the job: without the watch the ranks trained on."""
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    pid, end = Path(f"{script}.pid"), Path(f"{script}.end")
    job = os.fork()
    if job == 0:  # the job process: starts a rank from a fork server (nothing preloaded), then is killed
        try:
            multiprocessing.set_forkserver_preload([])
            ctx = multiprocessing.get_context("forkserver")
            ctx.Process(target=runpy.run_path, args=(str(script),), kwargs={"run_name": "__main__"}).start()
            while not pid.exists():
                time.sleep(0.01)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(job, 0)
    deadline = time.time() + 20
    while not end.exists() and time.time() < deadline:
        time.sleep(0.05)
    if not end.exists():
        os.kill(int(pid.read_text()), signal.SIGKILL)  # the orphan this test made
    assert end.exists() and end.read_text() == "interrupted"
