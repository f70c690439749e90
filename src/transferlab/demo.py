"""`make demo`: the main job, offline, on the embedded digits.

1. source pretraining on digits 0-4 (cached: reused while its config is unchanged);
2. the `compare_strategies` sweep on digits 5-9 with 10 labels per class;
3. the report, then where it is and how transfer did against training from scratch.

    python -m transferlab.demo [extra Hydra overrides]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from transferlab.report import PRIMARY

LOG_DIR = Path(os.environ.get("TRANSFERLAB_OUTPUTS", "outputs"))  # as paths.log_dir


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    started = time.time()
    command = [
        sys.executable,
        "-m",
        "transferlab.train",
        "-m",
        "experiment=compare_strategies",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        *extra,
    ]
    print("$ " + " ".join(command[1:]), flush=True)
    code = subprocess.call(command)
    sweeps = sorted((LOG_DIR / "compare_strategies" / "multiruns").glob("*/report.md"))
    if not sweeps:
        print("error: the sweep wrote no report; see the output above.", file=sys.stderr)
        return code or 1
    report = sweeps[-1]
    rows = pd.read_csv(report.parent / "results.csv")
    ok = rows[rows["status"] == "ok"]
    means = ok.groupby("strategy")[PRIMARY].mean().sort_values(ascending=False)
    print("\n" + report.read_text())
    source = _source_info(report.parent)
    if source:
        how = "reused from the cache" if source.get("reused") else "trained in this sweep"
        acc = (source.get("metrics") or {}).get(PRIMARY)
        print(
            f"Source task {source['experiment']} (digits 0-4): backbone {how}, its {PRIMARY} "
            f"{acc:.3f} -> {source['run_dir']}"
            if acc is not None
            else f"Source task: {source['run_dir']}"
        )
    print(f"Target task digits 5-9 (10 labels per class), mean {PRIMARY} over seeds:")
    for strategy, value in means.items():
        note = "  <- no transfer (random init)" if strategy == "scratch" else ""
        print(f"  {strategy:<18} {value:.3f}{note}")
    if "scratch" in means and "full" in means:
        delta = means["full"] - means["scratch"]
        verdict = "helped" if delta > 0 else "did not help"
        print(
            f"Source pretraining {verdict} full fine-tuning here: {means['full']:.3f} vs scratch "
            f"{means['scratch']:.3f} ({delta:+.3f})."
        )
    print(f"\nReport: {report}  ({time.time() - started:.0f} s)")
    return code


def _source_info(sweep: Path) -> dict | None:
    """The source-pretraining record of the sweep's first job that used one."""
    for path in sorted(sweep.glob("*/results.json")):
        source = json.loads(path.read_text()).get("source")
        if source:
            return source
    return None


if __name__ == "__main__":
    sys.exit(main())
