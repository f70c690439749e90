"""`experiment=source_selection`: score every candidate source on the target's training split and write
`selection.csv` (one row per candidate: each score, source accuracy, seconds) and `selection.png`,
both atomically, in the run directory; with `validate=true`, also `validation.csv` (`sources.validate`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from omegaconf import DictConfig

from transferlab.core.atomic import atomic_open
from transferlab.core.errors import TransferlabError
from transferlab.sources.candidates import resolve
from transferlab.sources.scoring import check_scores, score_candidate

log = logging.getLogger(__name__)
CSV = "selection.csv"
PLOT = "selection.png"


def zoo_members(cfg: DictConfig):
    """A callable giving the source zoo's {member: run dir}, building the zoo on first use."""

    def members() -> dict[str, Path | None]:
        from transferlab.sources.zoo import ensure_zoo

        return ensure_zoo(cfg)

    return members


def run_selection(cfg: DictConfig) -> pd.DataFrame:
    """Score the candidates of `cfg.selection`; returns the table that `selection.csv` holds."""
    sel = cfg.selection
    scores = check_scores(list(sel.get("scores") or []))
    candidates = resolve(list(sel.candidates), cfg.backbone, zoo=zoo_members(cfg))
    rows = []
    for cand in candidates:
        try:
            rows.append(score_candidate(cfg, cand, scores))
        except TransferlabError as exc:  # one unusable candidate (e.g. hub weights offline) spoils no others
            log.error("Candidate %s not scored: %s", cand.name, exc)
            rows.append({"candidate": cand.name, **dict.fromkeys(scores, math.nan), "note": f"error: {exc}"})
    if all(str(r.get("note", "")).startswith("error:") for r in rows):
        raise TransferlabError(f"No candidate could be scored; the first: {rows[0]['note']}")
    table = pd.DataFrame(rows)
    for name in scores:  # 1 = the score's favourite
        table[f"{name}_rank"] = table[name].rank(ascending=False, method="min")
    out = Path(cfg.paths.output_dir)
    write_table(table, out / CSV)
    plot_scores(table, scores, out / PLOT)
    log.info("Source selection of %d candidates -> %s", len(table), out / CSV)
    print(table[["candidate", *scores, "seconds"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if cfg.get("validate"):  # tune and test every candidate: do the scores rank them right?
        from transferlab.sources.validate import run_validation

        run_validation(cfg, table, candidates, scores)
    return table


def write_table(table: pd.DataFrame, path: Path) -> None:
    with atomic_open(path, "w") as f:
        table.to_csv(f, index=False)


def plot_scores(table: pd.DataFrame, scores: list[str], path: Path) -> Path:
    """One panel per score: a horizontal bar per candidate, the score's favourite in orange."""
    fig = Figure(figsize=(3.2 * len(scores), 0.45 * len(table) + 1.6))
    for i, name in enumerate(scores):
        ax = fig.add_subplot(1, len(scores), i + 1)
        values = table[name].astype(float)
        best = values.idxmax() if values.notna().any() else None
        colors = ["tab:orange" if j == best else "tab:blue" for j in table.index]
        ax.barh(range(len(table)), values.fillna(0.0), color=colors)
        for j, v in enumerate(values):
            if math.isnan(v):
                ax.text(0, j, " no head", va="center", fontsize=8, color="gray")
        ax.set_yticks(range(len(table)))
        ax.set_yticklabels(table["candidate"] if i == 0 else [""] * len(table))
        ax.invert_yaxis()
        ax.set_title(name)
        ax.axvline(0, color="black", linewidth=0.6)
    fig.suptitle("Transferability on the target's training split (higher is better)")
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=100, metadata={"Software": None})
    return path


def summary(table: pd.DataFrame, scores: list[str]) -> dict[str, Any]:
    """Each score's favourite candidate."""
    return {s: table.loc[table[s].idxmax(), "candidate"] for s in scores if table[s].notna().any()}


def run_task(cfg: DictConfig) -> None:
    """The Hydra task body of `experiment=source_selection` (and `experiment=source_zoo`): a mistake is
    one line on stderr and exit status 1."""
    import sys

    try:
        if cfg.get("selection") is not None:
            run_selection(cfg)
        else:
            from transferlab.sources.zoo import ensure_zoo

            ensure_zoo(cfg)
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    return None
