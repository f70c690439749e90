"""Hydra entry point: `python -m transferlab.train [overrides]` (also `transferlab-train`).

Deliberately light: `--help`, `--cfg job`, `--info` and shell completion need only Hydra and the
configs, so torch and Lightning are imported (by `transferlab.run.job`) only when a job runs.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from transferlab.core.secrets import install_env_guard

CONFIG_PATH = "pkg://transferlab.conf"

install_env_guard()  # `${oc.env:<secret>}` never resolves into a config (here and in every launcher's jobs)


def task(cfg: DictConfig) -> float | None:
    """The Hydra task function: run the job and return `optimized_metric` of the selected model (what a
    sweeper optimizes; a validation metric, never a test one), or None when the job did not finish ok."""
    if cfg.get("selection") is not None or cfg.get("zoo_build"):  # source selection / zoo: no target run
        from transferlab.sources.select import run_task as run_selection

        return run_selection(cfg)
    from transferlab.run.job import run_task

    return run_task(cfg)


def main() -> None:
    """Console script `transferlab-train`: every job's config is checked, and the output directory,
    before Hydra starts (a mistake is one line, and nothing on disk changes)."""
    from transferlab.core.hydra_help import share_one_repository, wants_help

    if wants_help(sys.argv[1:]):  # runs no job: nothing to check, and Hydra's listing made cheap
        share_one_repository()
    else:
        _preflight_or_exit(sys.argv[1:])
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")(task)()


def _preflight_or_exit(argv: list[str]) -> None:
    from transferlab.core.errors import TransferlabError
    from transferlab.run.preflight import preflight

    try:
        preflight(argv)
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def __getattr__(name: str) -> Any:
    """`transferlab.train.train` (run one job from a composed config) without importing it up front."""
    if name == "train":
        from transferlab.run.job import train

        return train
    raise AttributeError(f"module 'transferlab.train' has no attribute {name!r}")


if __name__ == "__main__":
    # Run the copy imported as `transferlab.train`, not this `__main__` one: joblib and submitit then
    # pickle the task function by reference instead of by value.
    from transferlab.train import main as imported_main

    imported_main()
