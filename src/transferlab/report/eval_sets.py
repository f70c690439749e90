"""report.md's eval-set section: per block, a column per extra test set (and their mean), and what the
paired tests over seeds support on each set (Holm-corrected with every other comparison of the report)."""

from __future__ import annotations

import pandas as pd

from transferlab.report.analysis import Analysis, Block
from transferlab.report.collect import key_name, set_of


def _cell(mean: float, low: float, high: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.3f}" if pd.isna(low) else f"{mean:.3f} ± {(high - low) / 2:.3f}"


def _p(value: float) -> str:
    return "-" if pd.isna(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def eval_set_lines(analysis: Analysis, block: Block) -> list[str]:
    """The block's table (arms x sets, 95% CI; `*` marks the arms tied with the set's best) and one
    verdict line per set."""
    if not block.sets:
        return []
    metric = analysis.options.metric
    comparisons = {metric: block.comparison, **block.sets}
    arms = block.comparison.table["arm"].tolist()
    out = pd.DataFrame({key_name(analysis.design.arm): arms})
    for name, c in comparisons.items():
        table = c.table.set_index("arm").reindex(arms)
        tied = set(c.tied) if c.pairs is not None else set()
        column = "in distribution" if name == metric else set_of(name)
        out[column] = [
            _cell(r["mean"], r["ci_low"], r["ci_high"]) + (" *" if a in tied else "")
            for a, r in table.iterrows()
        ]
    lines = [
        "",
        f"### {metric} on every eval set" + ("" if block.name == "all" else f": {block.name}"),
        "",
        out.to_markdown(index=False, disable_numparse=True),
        "",
        "`*`: tied with that column's best arm (not significantly worse, Holm-corrected). "
        "ood_mean: the mean over the eval sets of each run.",
        "",
    ]
    lines += [f"- {set_of(name)}: {_verdict(c, analysis.options.alpha)}" for name, c in block.sets.items()]
    return lines


def _verdict(c, alpha: float) -> str:
    if c.refused:
        return f"paired comparison refused: {c.refused}"
    if c.pairs is None or len(c.table) < 2:
        return "one arm only: nothing to compare."
    table = c.table.set_index("arm")
    if c.winner:
        worst = table.drop(index=c.winner)["p_holm_vs_best"].max()
        return f"**winner {c.winner}** (better than every other arm, largest Holm p = {_p(worst)})."
    tied = [a for a in c.tied if a != c.best]
    worse = [a for a in table.index if a not in c.tied]
    text = f"no single winner: top {c.best}, tied with {', '.join(tied) or 'none'} (alpha = {alpha:g})"
    if worse:
        text += "; significantly worse: " + ", ".join(
            f"{a} (p = {_p(table.at[a, 'p_holm_vs_best'])})" for a in worse
        )
    return text + "."
