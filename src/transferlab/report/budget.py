"""The report's line on the labelled budget: the labels each compared run saw (`labels_used`), and a
warning when validation came from outside that budget (`dataset.val_source=pool`, the old protocol)."""

from __future__ import annotations

import pandas as pd

from transferlab.report.collect import label


def budget_lines(compared: pd.DataFrame) -> list[str]:
    """'Labels: ...' for the compared runs (nothing when the runs do not record it)."""
    ok = compared[compared["status"] == "ok"] if "status" in compared else compared
    if "labels_used" not in ok or ok["labels_used"].isna().all():
        return []
    used = sorted({label(v) for v in ok["labels_used"].dropna()}, key=float)
    lines = [
        f"Labels: each run saw {' to '.join(dict.fromkeys([used[0], used[-1]]))} labelled images (labels_used: training and validation together)."
    ]
    pool = ok[ok.get("val_source", pd.Series(index=ok.index, dtype=object)) == "pool"]
    if len(pool):
        lines.append(
            f"Validation: {len(pool)} of {len(ok)} runs used dataset.val_source=pool: their validation images were held "
            "out of all training images, outside the labelled budget (the old protocol), so labels_used counts them "
            "but a low-label claim does not hold (Oliver et al. 2018); dataset.val_source=budget draws them from inside it."
        )
    return lines
