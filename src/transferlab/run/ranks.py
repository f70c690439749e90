"""How a DDP job inside a Hydra multirun starts its ranks: forked from one fork server per job process.

Lightning's multiprocessing launcher starts the ranks again for every `trainer.fit`, `validate` and
`test` call; with `start_method=spawn` each start is a fresh interpreter importing torch, Lightning and
timm. Here they fork from a fork server (`multiprocessing`'s `forkserver`) that imported the job's
libraries once: a fresh process, and none of the modules it imports touches CUDA, so its forks can use
CUDA as spawned processes can. A forked rank inherits the server's state, not the
job's, so the launcher hands it what a spawned rank gets: the job's environment (the seed Lightning
re-applies in each rank is `PL_GLOBAL_SEED`), `torch.use_deterministic_algorithms`, cudnn.benchmark and
the random generators' states, and the parameters as private copies. Rank 0 logs to the job's log files,
rank k to `<name>_ddp_process_<k>.log` beside them (the names Lightning's script launcher gives), and a
rank's exception reaches the job as itself (a `DivergedError` gives the job `status: diverged`), and a
rank is interrupted when the job process exits (a SIGTERM'd sweep), as torch interrupts a spawned one.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.strategies.launchers.multiprocessing import (
    _check_missing_main_guard,
    _disable_module_memory_sharing,
)
from lightning_fabric.utilities.apply_func import apply_to_collection
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.strategies.launchers.multiprocessing import (
    _GlobalStateSnapshot,
    _MultiProcessingLauncher,
)
from torch.multiprocessing import ProcessRaisedException

from transferlab.run.job_watch import interrupt_when_the_job_ends
from transferlab.run.runtime import lightning_logs_to_the_job

log = logging.getLogger("transferlab")

# What a rank unpickles and runs (the job's modules, and through them torch, Lightning, timm, Hydra).
PRELOAD = ["transferlab.run.job", "transferlab.train"]
# Where there is no fork server (Windows), ranks are spawned.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@dataclass
class JobState:
    """What a spawned rank would have of the job process: its environment, torch's global flags and
    random states, and where its log lines go."""

    environ: dict[str, str]
    torch_state: _GlobalStateSnapshot
    log_files: list[tuple[str, str | None, str | None, str, int]]  # path, format, date format, style, level
    log_level: int

    @classmethod
    def capture(cls) -> JobState:
        root = logging.getLogger()
        files = [
            (h.baseFilename, *_formats(h.formatter), h.level)
            for h in root.handlers
            if isinstance(h, logging.FileHandler)
        ]
        return cls(dict(os.environ), _GlobalStateSnapshot.capture(), files, root.level)

    def restore(self, rank: int) -> None:
        os.environ.clear()
        os.environ.update(self.environ)
        self.torch_state.restore()
        root = logging.getLogger()
        for handler in self.handlers(rank):
            root.addHandler(handler)
        root.setLevel(self.log_level)
        lightning_logs_to_the_job()

    def handlers(self, rank: int) -> list[logging.FileHandler]:
        """The job's log file handlers for `rank` (rank k writes `<name>_ddp_process_<k>.log`)."""
        handlers = []
        for path, fmt, datefmt, style, level in self.log_files:
            if rank:
                path = str(Path(path).with_name(f"{Path(path).stem}_ddp_process_{rank}.log"))
            handler = logging.FileHandler(path, mode="a")
            handler.setFormatter(logging.Formatter(fmt, datefmt, style))
            handler.setLevel(level)
            handlers.append(handler)
        return handlers


def _formats(formatter: logging.Formatter | None) -> tuple[str | None, str | None, str]:
    """A formatter's format strings and style (a formatter of a user's class may not pickle; its strings
    do). The style matters: a '{' format read as '%' is refused ('Invalid format') and the rank dies."""
    if formatter is None:
        return None, None, "%"
    kind = type(getattr(formatter, "_style", None))
    style = next((key for key, (cls, _) in logging._STYLES.items() if kind is cls), "%")
    return getattr(formatter, "_fmt", None), formatter.datefmt, style


class ForkServerLauncher(_MultiProcessingLauncher):
    """Lightning's multiprocessing launcher with `start_method=forkserver`, each rank given the job's
    state as `spawn` gives it (see the module's docstring)."""

    def __init__(self, strategy: Any) -> None:
        super().__init__(strategy, start_method="forkserver")
        self._job: JobState | None = None
        self._errors: Any = None  # a queue for the ranks' exceptions, made per launch

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        _check_missing_main_guard()  # a rank imports the main script too: an unguarded one reruns the sweep
        multiprocessing.set_forkserver_preload(PRELOAD)  # read when the server starts, once per process
        # Lightning sets MASTER_PORT itself right after; set here first so the ranks' environment has it.
        os.environ["MASTER_PORT"] = str(self._strategy.cluster_environment.main_port)
        self._job = JobState.capture()
        # A rank's error reaches the job as itself (a DivergedError: status diverged), not as text.
        self._errors = errors = multiprocessing.get_context("forkserver").SimpleQueue()
        try:
            return super().launch(function, *args, trainer=trainer, **kwargs)
        except ProcessRaisedException as exc:
            if errors.empty():
                raise
            raise rebuild(errors.get()) from exc
        finally:
            self._errors = None  # a queue pickles only while starting processes

    def _wrapping_function(
        self,
        process_idx: int,
        trainer: Any,
        function: Any,
        args: Any,
        kwargs: Any,
        return_queue: Any,
        global_states: Any = None,
    ) -> None:
        assert self._job is not None
        self._job.restore(process_idx)
        interrupt_when_the_job_ends()  # a spawned rank's parent is the job; a forked one's the fork server
        if isinstance(self._strategy.accelerator, CPUAccelerator):  # as Lightning does for spawn
            args, kwargs = _disable_module_memory_sharing((args, kwargs))
        log.info(
            "DDP rank %d (trainer.%s): pid %d, forked from the fork server %d; PL_GLOBAL_SEED=%s, "
            "deterministic=%s, tensors shared with other processes: %d, CUDA usable after the fork: %s",
            process_idx,
            trainer.state.fn.value if trainer is not None else "?",
            os.getpid(),
            os.getppid(),
            os.environ.get("PL_GLOBAL_SEED"),
            torch.are_deterministic_algorithms_enabled(),
            shared_tensors((args, kwargs)),
            not torch.cuda._is_in_bad_fork(),  # False if the server had asked the driver anything
        )
        try:
            super()._wrapping_function(process_idx, trainer, function, args, kwargs, return_queue)
        except Exception as exc:  # torch sends the parent only its traceback's text
            if (portable := portable_error(exc)) is not None:
                self._errors.put(portable)
            raise


def portable_error(exc: BaseException) -> bytes | None:
    """`exc` pickled so that it unpickles as itself: whole where it round-trips (an OSError keeps its errno
    and file name), otherwise as class, args and attributes (an exception whose __init__ takes more than
    its message, as DivergedError's, does not unpickle whole). None when neither works or it is over
    16 KiB (a pipe's buffer holds it: the rank's put never blocks)."""
    for parts in ((exc,), (type(exc), exc.args, dict(vars(exc)))):
        try:
            data = pickle.dumps(parts)
            back = rebuild(data)
        except Exception:
            continue
        if type(back) is type(exc) and str(back) == str(exc):
            return data if len(data) < 16384 else None
    return None


def rebuild(data: bytes) -> BaseException:
    """The exception `portable_error` pickled (from a rank of this job: pickle's trust is torch's own)."""
    parts = pickle.loads(data)
    if len(parts) == 1:
        return parts[0]
    cls, args, attributes = parts
    exc = cls.__new__(cls)
    exc.args = args
    vars(exc).update(attributes)
    return exc


def shared_tensors(data: Any) -> int:
    """How many parameters and buffers of the modules in `data` are in shared memory (a rank must train
    its own copy: shared ones take every rank's optimizer step)."""
    counts: list[int] = []

    def count(module: torch.nn.Module) -> torch.nn.Module:
        counts.append(sum(t.is_shared() for t in itertools.chain(module.parameters(), module.buffers())))
        return module

    apply_to_collection(data, function=count, dtype=torch.nn.Module)
    return sum(counts)
