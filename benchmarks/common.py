"""Helpers shared by the benchmarks: compose the real config, time a run, print JSON."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from transferlab.core.config import compose_train


def compose_run(out_dir: Path, overrides: list[str]) -> DictConfig:
    """The config the CLI would build for `overrides`, writing into `out_dir`."""
    return compose_train(overrides, output_dir=out_dir)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
    os.environ.setdefault("TRANSFERLAB_CACHE", str(path / "cache"))
    return path


def emit(result: dict) -> None:
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


def interleaved(arms: dict, repeats: int, warmup: bool = True) -> dict[str, list]:
    """Run each arm `repeats` times in turn (A B A B ...), after one warm-up round; an arm is a
    callable returning seconds (or a dict with "seconds"). The machine is shared and noisy: compare
    medians of arms measured side by side, never single runs."""
    if warmup:
        for run in arms.values():
            run()
    results: dict[str, list] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, run in arms.items():
            results[name].append(run())
    return results


def spread(values: list[float]) -> dict[str, float]:
    """Median with min and max."""
    import statistics

    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def ratio(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """Per-repeat ratios of two interleaved arms, as median with min-max."""
    return spread([a / b for a, b in zip(numerators, denominators, strict=True)])
