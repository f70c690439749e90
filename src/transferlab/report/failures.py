"""The report's sections on jobs that did not finish ok: diverged apart from failed, trials apart from runs."""

from __future__ import annotations

import pandas as pd

from transferlab.report.collect import Design, key_name, label


def one_line(error: object) -> str:
    """An error as one line (type and message), safe inside a markdown table."""
    text = str(error or "").strip()
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.replace("|", "/")[:300]


def failed_sections(rows: pd.DataFrame, design: Design) -> list[str]:
    """Diverged jobs (the settings blew training up) apart from failed ones (something broke)."""
    failed = rows[~rows["status"].isin(["ok", "pruned"])]
    if failed.empty:
        return []
    trial = failed.get("tuning_phase", pd.Series(index=failed.index, dtype=object)) == "trial"
    diverged = failed["status"] == "diverged"
    sections = (
        ("Diverged jobs", failed[~trial & diverged]),
        ("Failed jobs", failed[~trial & ~diverged]),
        ("Diverged tuning trials", failed[trial & diverged]),
        ("Failed tuning trials", failed[trial & ~diverged]),
    )
    lines = []
    for title, part in sections:
        if part.empty:
            continue
        lines += ["", f"## {title}", ""]
        for _, r in part.iterrows():
            lines.append(
                f"- job {r['job']} ({key_name(design.arm)} {label(r.get(design.arm))}), {r['status']}: {one_line(r['error'])} (full record: {r['job']}/results.json)"
            )
    return lines
