"""Start-up per job: process start to the first training step of a one-epoch run, against the floor.

Arms, each a fresh process, alternating after a warm-up round, `--repeats` times:
`floor` (python -c "import torch, pytorch_lightning, timm, hydra, torchmetrics": the libraries every
job needs), `first_step` (`python -m transferlab.train trainer.max_epochs=1 ...`: wall-clock from
starting the process to the first training step, and to its end), `help` (`--help`), `cfg_job`
(`--cfg job`) and `python` (the interpreter alone). In this process: the pre-flight's cost for a
`--sweep-jobs`-job sweep (`-m seed=range(N)`), per job, against one job's start-up. With `--compare
DIR` (another checkout, e.g. a `git worktree` of an earlier commit) the transferlab arms also run
from DIR/src, interleaved with these: a before/after in the same conditions.

    .venv/bin/python -m benchmarks.startup [--repeats 3] [--sweep-jobs 200] [--compare DIR] [OVERRIDES ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import emit, interleaved, ratio, spread, workdir

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = "import torch, pytorch_lightning, timm, hydra, torchmetrics"


def wall(*args: str, src: Path | None = None) -> float:
    """Seconds from starting `python ARGS` to its exit (it must succeed); transferlab from `src` if given."""
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"python {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def one_epoch(root: Path, overrides: list[str], src: Path | None = None):
    """A run returning {seconds: to the first training step, total: to the end}."""
    count = iter(range(10**6))

    def run() -> dict:
        i = f"{next(count)}_{src is not None}"
        mark = root / f"first_step_{i}"
        args = ["-m", "transferlab.train", "trainer.max_epochs=1", f"hydra.run.dir={root / f'run_{i}'}"]
        args += ["+callbacks.first_step._target_=benchmarks.first_step.FirstStepMark"]
        args += [f"+callbacks.first_step.path={mark}", *overrides]
        start = time.time()
        total = wall(*args, src=src)
        return {"seconds": float(mark.read_text()) - start, "total": total}

    return run


def preflight_cost(root: Path, jobs: int):
    """Seconds the pre-flight takes for a `jobs`-job sweep, in this (warm) process."""
    from transferlab.run.preflight import preflight

    count = iter(range(10**6))

    def run() -> float:
        sweep = root / f"sweep_{next(count)}"
        start = time.perf_counter()
        preflight(["-m", f"seed=range(0,{jobs})", f"hydra.sweep.dir={sweep}"])
        return time.perf_counter() - start

    return run


def transferlab_arms(root: Path, overrides: list[str], src: Path | None, suffix: str = "") -> dict:
    run = ["-m", "transferlab.train"]
    return {
        f"first_step{suffix}": one_epoch(root, ["trainer.enable_progress_bar=false", *overrides], src),
        f"help{suffix}": lambda: wall(*run, "--help", src=src),
        f"cfg_job{suffix}": lambda: wall(*run, "--cfg", "job", src=src),
    }


def summary(runs: dict, suffix: str = "") -> dict:
    first = [r["seconds"] for r in runs[f"first_step{suffix}"]]
    return {
        "first_step_seconds": spread(first),
        "one_epoch_total_seconds": spread([r["total"] for r in runs[f"first_step{suffix}"]]),
        "first_step_over_floor": ratio(first, runs["floor"]),
        "help_seconds": spread(runs[f"help{suffix}"]),
        "cfg_job_seconds": spread(runs[f"cfg_job{suffix}"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, choices=(0, 1), default=1)
    parser.add_argument("--sweep-jobs", type=int, default=200)
    parser.add_argument("--compare", type=Path, help="another checkout whose src/ runs interleaved")
    parser.add_argument("overrides", nargs="*", help="for the one-epoch run, e.g. backbone=resnet18")
    args = parser.parse_args()
    root = workdir()
    os.environ.setdefault(
        "TRANSFERLAB_CACHE", str(root / "cache")
    )  # the children share it: warm after round 1
    arms = {"python": lambda: wall("-c", "pass"), "floor": lambda: wall("-c", LIBRARIES)}
    arms |= transferlab_arms(root, args.overrides, None)
    if args.compare:
        arms |= transferlab_arms(root, args.overrides, args.compare.resolve() / "src", "_compared")
    arms["preflight_sweep"] = preflight_cost(root, args.sweep_jobs)
    runs = interleaved(arms, repeats=args.repeats, warmup=bool(args.warmup))
    first = [r["seconds"] for r in runs["first_step"]]
    per_job = [s / args.sweep_jobs for s in runs["preflight_sweep"]]
    result = {
        "benchmark": "startup",
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "run_overrides": args.overrides,
        "python_seconds": spread(runs["python"]),
        "floor_import_seconds": spread(runs["floor"]),
        **summary(runs),
        "preflight_sweep_jobs": args.sweep_jobs,
        "preflight_seconds_per_job": spread(per_job),
        "preflight_per_job_over_first_step": ratio(per_job, first),
    }
    if args.compare:
        result["compared"] = {"src": str(args.compare.resolve() / "src"), **summary(runs, "_compared")}
        result["first_step_ratio_over_compared"] = ratio(
            first, [r["seconds"] for r in runs["first_step_compared"]]
        )
        result["help_ratio_over_compared"] = ratio(runs["help"], runs["help_compared"])
    emit(result)


if __name__ == "__main__":
    main()
