"""`make demo`, part 2: which source, and does transfer help at all?

On digits 5-9 with 2 labels per class (one trains, one validates: every label counted), the small zoo
`zoo=digits_demo` (near: digits 0-4, the demo's own source; inverted: the target's classes inverted and
noisy; random init) is scored in seconds (`selection.csv`), then every candidate is tuned and tested with
a linear probe beside the no-transfer baseline, scratch (`experiment=source_selection validate=true`:
the same Optuna budget per arm, 10 fresh seeds tested once, paired and Holm-corrected in one report).

    python -m transferlab.demo_sources [extra Hydra overrides]
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
SETTINGS = [
    "zoo=digits_demo",
    "dataset.samples_per_class=2",
    "validate=true",
    "validation.strategies=[linear_probe]",
    "validation.scratch=true",
    "tuning.n_trials=4",
    "tuning.final_seeds=[100,101,102,103,104,105,106,107,108,109]",
    "validation.overrides=['hydra/launcher=local']",
    "trainer.enable_progress_bar=false",
    "callbacks=minimal",
]
BASELINE = "scratch"


def verdicts(comparison: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """One line per arm of the validation sweep's comparison.csv: its mean and interval, and how it
    stands against scratch (paired over seeds, Holm-corrected over every pair of the report)."""
    lines = []
    for _, row in comparison.iterrows():
        text = f"  {row['arm']:<26} {row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        if row["arm"] == BASELINE:
            text += "  <- no transfer (random init, everything trains)"
        elif pd.notna(row.get("p_holm")) and row.get("baseline") == BASELINE:
            better = row["p_holm"] < alpha and row["diff_mean"] > 0
            worse = row["p_holm"] < alpha and row["diff_mean"] < 0
            how = (
                "significantly better than"
                if better
                else "significantly worse than"
                if worse
                else "tied with"
            )
            text += f"  {how} scratch ({row['diff_mean']:+.3f}, Holm p = {row['p_holm']:.3g})"
        lines.append(text)
    return lines


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    if asked_for_help(
        extra, "usage: python -m transferlab.demo_sources [extra Hydra overrides]\n\n" + __doc__
    ):
        return 0
    started = time.time()
    run_dir = (LOG_DIR / "source_selection" / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    command = [sys.executable, "-m", "transferlab.select", *SETTINGS, *extra, f"hydra.run.dir={run_dir}"]
    print("$ " + " ".join(command[1:]), flush=True)
    code = subprocess.call(command)
    comparison_csv = run_dir / "validation" / "comparison.csv"
    if not comparison_csv.is_file():
        print(
            "error: the source selection wrote no validation report; see the output above.", file=sys.stderr
        )
        return code or 1
    print("\nTarget digits 5-9, 2 labels per class; each source tuned with a linear probe, 10 fresh seeds:")
    print("\n".join(verdicts(pd.read_csv(comparison_csv))))
    print(f"\nScores: {run_dir / 'selection.csv'}  Ranking check: {run_dir / 'validation.csv'}")
    print(f"Report: {run_dir / 'validation' / 'report.md'}  ({time.time() - started:.0f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
