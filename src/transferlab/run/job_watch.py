"""A DDP rank ends with its job process, as a spawned one does.

torch asks the kernel to send a spawned rank SIGINT when its parent dies (PR_SET_PDEATHSIG): a job killed
by SIGTERM takes its ranks with it. A rank forked from the fork server has the server as its parent, and
the server outlives the job, so the ranks would train on, orphaned, writing into the dead job's folder.
Standard library only: the check is cheap to start and to test.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading


def interrupt_when_the_job_ends() -> bool:
    """Send this process SIGINT (what torch's spawned ranks get) once the process that started it exits.
    False when there is no such process to watch (the main process)."""
    job = multiprocessing.parent_process()
    if job is None:
        return False

    def watch() -> None:
        job.join()  # its sentinel: the pipe whose other end only the job holds reads EOF when it exits
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="transferlab-job-watch", daemon=True).start()
    return True
