"""Shared fixtures: real Hydra composition into tmp_path, generated image folders, offline env."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# One intra-op thread per process (before numpy and torch load): `make test` runs two pytest workers on
# two cores, and the CLI tests' subprocesses inherit this; tiny models gain nothing from more threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from PIL import Image  # noqa: E402

from transferlab.core.config import compose_train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Tests never touch the network: W&B offline, Hugging Face hub offline.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ["WANDB_SILENT"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def single_thread() -> None:
    """torch may have been imported before this file (a plugin): set its thread count too."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """One cache (digits folder, feature caches) for the session."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["TRANSFERLAB_CACHE"] = str(path)
    return path


FAST = [
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "callbacks=minimal",
]


def compose_cfg(out_dir: Path, overrides: list[str] | None = None, fast: bool = True) -> DictConfig:
    """Compose `train.yaml` exactly as the CLI would, with outputs in `out_dir`."""
    return compose_train([*(FAST if fast else []), *(overrides or [])], output_dir=out_dir)


@pytest.fixture
def one_thread():
    """One intra-op thread for in-process tiny models: on a shared, loaded CPU they run many times
    faster without OpenMP threads waiting on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str, fast: bool = True, out: Path | None = None) -> DictConfig:
        return compose_cfg(out or tmp_path / "run", list(overrides), fast=fast)

    return make


def write_image_folder(
    root: Path,
    classes=("cat", "dog", "fox"),
    per_class=12,
    test_per_class=4,
    size=64,
    val_per_class=0,
    grayscale=False,
) -> Path:
    """An image folder of real PNGs in the Keras layout; each class has its own brightness pattern."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class), ("val", val_per_class)):
        for c, name in enumerate(classes):
            if n == 0:
                continue
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros((size, size, 3), dtype=np.uint8)
                base[:, : size * (c + 1) // len(classes)] = 200
                noisy = np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)
                image = Image.fromarray(noisy).convert("L" if grayscale and i % 2 else "RGB")
                image.save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


def run_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: int = 300, module: str = "transferlab.train"
):
    """Run a transferlab command in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fork_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: int = 300, module: str = "transferlab.train"
) -> subprocess.CompletedProcess:
    """`run_cli` for tests about what a command does, not about starting a process: `module.main()` with
    ARGS as its command line (sys.argv), in a fork of this process (the libraries are loaded already; the
    child's state dies with it), its stdout and stderr in files."""
    logs = Path(tempfile.mkdtemp(prefix="fork-cli-"))
    pid = fork_start(*args, cwd=cwd, env=env, module=module, logs=logs)
    code = fork_wait(pid, timeout)
    out, err = ((logs / name).read_text() for name in ("stdout", "stderr"))
    return subprocess.CompletedProcess([module, *args], code, out, err)


def fork_start(
    *args: str,
    cwd: Path,
    env: dict | None = None,
    module: str = "transferlab.train",
    logs: Path | None = None,
) -> int:
    """`fork_cli` without waiting: the child's pid (its output in `logs`, or discarded)."""
    import transferlab.run.job  # noqa: F401 - what a job imports (torch, Lightning, timm): once, here
    import transferlab.train  # noqa: F401

    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        _fork_child(module, list(args), cwd, env or {}, logs)
    return pid


def fork_wait(pid: int, timeout: int = 300) -> int:
    """The exit code of a `fork_start` child (killed, and TimeoutExpired, after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not (done := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(f"forked command {pid}", timeout)
        time.sleep(0.02)
    return os.waitstatus_to_exitcode(done[1])


def _fork_child(module: str, args: list[str], cwd: Path, env: dict, logs: Path | None) -> None:
    code = 1
    try:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            path = logs / name if logs else os.devnull
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the child's own streams
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(cwd)
        os.environ.update(env)
        if "torch" in sys.modules:  # OpenMP's thread pool does not survive fork
            sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        sys.argv = [module, *args]
        pools = _worker_pool()
        try:
            importlib.import_module(module).main()
            code = 0
        except SystemExit as exc:  # as the interpreter would exit
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:  # what the interpreter's exit does for joblib's worker processes (os._exit skips it)
            if _worker_pool() not in (None, pools):
                _worker_pool().shutdown(wait=True)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _worker_pool():
    """joblib's reusable pool of worker processes (hydra/launcher=local), if one was started."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    return getattr(loky, "_executor", None)
