"""`make demo`: the main job, offline, on the embedded digits.

1. source pretraining on digits 0-4 (cached: reused while its config is unchanged);
2. the fair comparison on digits 5-9 with 10 labels per class: every strategy tuned with the same small
   budget on validation, its best configuration re-run on 5 fresh seeds and tested once
   (`experiment=tuned_comparison`, two jobs at a time);
3. the report, and what its statistics support.

    python -m transferlab.demo [extra Hydra overrides]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from transferlab.core.errors import asked_for_help

LOG_DIR = Path(os.environ.get("TRANSFERLAB_OUTPUTS", "outputs"))  # as paths.log_dir
EXPERIMENT = "tuned_comparison"
DEMO_BUDGET = ["tuning.n_trials=4", "hydra/launcher=local"]


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    if asked_for_help(
        extra, "usage: python -m transferlab.demo [extra Hydra overrides]   (make demo)\n\n" + __doc__
    ):
        return 0
    started = time.time()
    command = [
        sys.executable,
        "-m",
        "transferlab.train",
        f"experiment={EXPERIMENT}",
        *DEMO_BUDGET,
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        *extra,
    ]
    print("$ " + " ".join(command[1:]), flush=True)
    code = subprocess.call(command)
    reports = sorted((LOG_DIR / EXPERIMENT / "multiruns").glob("*/report.md"))
    if not reports:
        print("error: the sweep wrote no report; see the output above.", file=sys.stderr)
        return code or 1
    report = reports[-1]
    print("\n" + report.read_text())
    source = _source_info(report.parent)
    if source is not None:
        how = "reused from the cache" if source.get("reused") else "trained for this demo"
        print(f"Source task {source['experiment']} (digits 0-4): backbone {how} -> {source['run_dir']}")
    comparison = pd.read_csv(report.parent / "comparison.csv")
    print("Target task digits 5-9 (10 labels per class), each strategy tuned equally, 5 fresh seeds:")
    for _, row in comparison.iterrows():
        mark = "  <- no transfer (random init)" if row["arm"] == "scratch" else ""
        tied = "tied with the best" if row["tied_with_best"] else "significantly worse than the best"
        print(
            f"  {row['arm']:<18} {row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]  {tied}{mark}"
        )
    print(
        "\nThe demo's budget is small (4 trials per strategy); for a paper-grade answer run\n"
        f"  python -m transferlab.train experiment={EXPERIMENT} tuning.n_trials=30 "
        "tuning.final_seeds='[100,101,102,103,104,105,106,107,108,109]'"
    )
    print(f"\nReport: {report}  ({time.time() - started:.0f} s)")
    return code


def _source_info(sweep: Path) -> dict | None:
    """The sweep's source-pretraining record; `reused` is false when one of its jobs trained it."""
    import json

    found = [json.loads(p.read_text()).get("source") for p in sweep.glob("*/results.json")]
    found = [s for s in found if s]
    if not found:
        return None
    return {**found[0], "reused": all(s.get("reused") for s in found)}


if __name__ == "__main__":
    sys.exit(main())
