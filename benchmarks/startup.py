"""Start-up per job: process start to the first training step of a one-epoch run, against the floor.

Arms, each a fresh process, alternating after a warm-up round, `--repeats` times:
`floor` (python -c "import torch, pytorch_lightning, timm, hydra, torchmetrics": the libraries every
job needs), `first_step` (`python -m transferlab.train trainer.max_epochs=1 ...`: wall-clock from
starting the process to the first training step, and to its end), `help` (`--help`), `cfg_job`
(`--cfg job`), `job_imports` (in a process that has imported those libraries, the seconds to import
the job path, Hydra's report callback and the digits data: what start-up cuts change) and `python`
(the interpreter alone). In this process: the pre-flight's cost for a
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
# What a job imports beyond the libraries (its own modules, the report callback Hydra builds, the data),
# timed in the process after the libraries: the part start-up cuts can change, without their noise.
JOB_IMPORTS = (
    f"{LIBRARIES}; import time; start = time.perf_counter(); "
    "import transferlab.run.job, transferlab.data.digits, transferlab.report as r; r.ReportCallback; "
    "print(time.perf_counter() - start)"
)


def wall(*args: str, src: Path | None = None) -> float:
    """Seconds from starting `python ARGS` to its exit (it must succeed); transferlab from `src` if given."""
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"python {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def job_imports(src: Path | None):
    def run() -> float:
        env = {**os.environ, "PYTHONPATH": str(src)} if src else None
        out = subprocess.run(
            [sys.executable, "-c", JOB_IMPORTS], cwd=REPO, capture_output=True, text=True, env=env
        )
        if out.returncode:
            raise SystemExit(f"the job imports failed:\n{out.stderr[-3000:]}")
        return float(out.stdout.split()[-1])

    return run


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


def transferlab_arms(
    root: Path, overrides: list[str], src: Path | None, suffix: str, wanted: list[str]
) -> dict:
    run = ["-m", "transferlab.train"]
    arms = {
        "first_step": one_epoch(root, ["trainer.enable_progress_bar=false", *overrides], src),
        "help": lambda: wall(*run, "--help", src=src),
        "cfg_job": lambda: wall(*run, "--cfg", "job", src=src),
        "job_imports": job_imports(src),
    }
    return {f"{name}{suffix}": arm for name, arm in arms.items() if name in wanted}


def summary(runs: dict, suffix: str = "") -> dict:
    result = {}
    if f"first_step{suffix}" in runs:
        first = [r["seconds"] for r in runs[f"first_step{suffix}"]]
        result["first_step_seconds"] = spread(first)
        result["one_epoch_total_seconds"] = spread([r["total"] for r in runs[f"first_step{suffix}"]])
        result["first_step_over_floor"] = ratio(first, runs["floor"])
    for name in ("help", "cfg_job", "job_imports"):
        if f"{name}{suffix}" in runs:
            result[f"{name}_seconds"] = spread(runs[f"{name}{suffix}"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, choices=(0, 1), default=1)
    parser.add_argument("--sweep-jobs", type=int, default=200)
    parser.add_argument("--compare", type=Path, help="another checkout whose src/ runs interleaved")
    parser.add_argument(
        "--arms", default="first_step,job_imports,help,cfg_job", help="the transferlab arms to run"
    )
    parser.add_argument("overrides", nargs="*", help="for the one-epoch run, e.g. backbone=resnet18")
    args = parser.parse_args()
    root = workdir()
    os.environ.setdefault(
        "TRANSFERLAB_CACHE", str(root / "cache")
    )  # the children share it: warm after round 1
    arms = {"python": lambda: wall("-c", "pass"), "floor": lambda: wall("-c", LIBRARIES)}
    wanted = args.arms.split(",")
    arms |= transferlab_arms(root, args.overrides, None, "", wanted)
    if args.compare:
        arms |= transferlab_arms(root, args.overrides, args.compare.resolve() / "src", "_compared", wanted)
    if args.sweep_jobs:
        arms["preflight_sweep"] = preflight_cost(root, args.sweep_jobs)
    runs = interleaved(arms, repeats=args.repeats, warmup=bool(args.warmup))
    result = {
        "benchmark": "startup",
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "run_overrides": args.overrides,
        "python_seconds": spread(runs["python"]),
        "floor_import_seconds": spread(runs["floor"]),
        **summary(runs),
    }
    if args.sweep_jobs and "first_step" in runs:
        first = [r["seconds"] for r in runs["first_step"]]
        per_job = [s / args.sweep_jobs for s in runs["preflight_sweep"]]
        result["preflight_sweep_jobs"] = args.sweep_jobs
        result["preflight_seconds_per_job"] = spread(per_job)
        result["preflight_per_job_over_first_step"] = ratio(per_job, first)
    if args.compare:
        result["compared"] = {"src": str(args.compare.resolve() / "src"), **summary(runs, "_compared")}
        for name in ("help", "cfg_job", "job_imports"):
            if name in runs:
                result[f"{name}_ratio_over_compared"] = ratio(runs[name], runs[f"{name}_compared"])
        if "first_step" in runs:
            seconds = {k: [r["seconds"] for r in runs[k]] for k in ("first_step", "first_step_compared")}
            result["first_step_ratio_over_compared"] = ratio(
                seconds["first_step"], seconds["first_step_compared"]
            )
    result["load_average_at_end"] = os.getloadavg()
    emit(result)


if __name__ == "__main__":
    main()
