"""Several experiments' sweeps in one go, and one report over all of them.

Hydra's `-m experiment=a,b` (or `experiment='glob(*)'`) runs each experiment once with its own
defaults, but not its own sweep: `hydra.sweeper.params` set inside an experiment file only takes effect
when that experiment is the sweep's primary choice. This runs each experiment's own sweep into one
parent folder, then writes one report there, grouped by experiment.

    transferlab-sweep-all compare_strategies data_efficiency [-- extra Hydra overrides]
    python -m transferlab.sweep_all depth_sweep backbones --out outputs/all -- trainer.max_epochs=5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(prog="transferlab-sweep-all", description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", help="experiment config names (conf/experiment/*.yaml)")
    parser.add_argument(
        "--out", type=Path, default=None, help="parent folder (default outputs/sweep_all/<time>)"
    )
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    out = (args.out or Path("outputs") / "sweep_all" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    failed = []
    for experiment in args.experiments:
        command = [
            sys.executable,
            "-m",
            "transferlab.train",
            "-m",
            f"experiment={experiment}",
            f"hydra.sweep.dir={out / experiment}",
            *extra,
        ]
        print("$ " + " ".join(command[1:]), flush=True)
        if subprocess.call(command) != 0:
            failed.append(experiment)
    from transferlab.report import build_report

    report = build_report(out)
    print(f"Report over {len(args.experiments)} experiments: {out / 'report.md'}")
    if failed or report.failed:
        print(f"error: failed: {', '.join(failed) or ', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
