"""report.md: what was compared, the tables, and only the statements the statistics support."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from transferlab.core.names import PAIRED_TESTS
from transferlab.report.analysis import Analysis, Block
from transferlab.report.budget import budget_lines
from transferlab.report.collect import key_name, label
from transferlab.report.eval_sets import eval_set_lines
from transferlab.report.failures import failed_sections
from transferlab.report.source_quality import source_quality_lines
from transferlab.report.stats import SMALL_N


def _num(value: float, digits: int = 3, sign: bool = False) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _pm(mean: float, low: float, high: float, digits: int = 3, sign: bool = False) -> str:
    if pd.isna(mean):
        return "-"
    if pd.isna(low):
        return _num(mean, digits, sign)
    return f"{_num(mean, digits, sign)} ± {(high - low) / 2:.{digits}f}"


def _p(value: float) -> str:
    if value is None or pd.isna(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def render_markdown(analysis: Analysis, rows: pd.DataFrame, sweep_dir: Path, plots: list[Path]) -> str:
    design, options = analysis.design, analysis.options
    lines = [f"# Sweep report: {sweep_dir.name}", ""]
    counts = rows["status"].value_counts()
    summary = ", ".join(
        f"{counts[s]} {s}" for s in ("ok", "failed", "pruned", "diverged", "interrupted") if s in counts
    )
    lines.append(f"Jobs: {len(rows)} ({summary or 'none'}).")
    compared_by = [key_name(design.arm), *map(key_name, design.blocks)]
    lines.append(f"Compared by: {', '.join(compared_by)}.")
    lines += _protocol(analysis, rows)
    lines += _data_check(design.compared[design.compared["status"] == "ok"])
    lines += budget_lines(design.compared)
    for block in analysis.blocks:
        lines += [
            "",
            f"## {options.metric} by {key_name(design.arm)}"
            + ("" if block.name == "all" else f": {block.name}"),
            "",
        ]
        lines += _table(analysis, block) + [""] + _verdict(analysis, block)
        lines += eval_set_lines(analysis, block)
    if not analysis.blocks:
        lines += ["", f"No successful run with {options.metric} to compare."]
    lines += source_quality_lines(analysis)
    lines += _friedman(analysis)
    lines += _tuning(analysis)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += failed_sections(rows, design)
    lines += _method(analysis)
    lines += [
        "",
        f"Rows: results.csv (one per job), comparison.csv (one per arm). Rebuild: `python -m transferlab.report {sweep_dir}`.",
        "",
    ]
    return "\n".join(lines)


def _protocol(analysis: Analysis, rows: pd.DataFrame) -> list[str]:
    design = analysis.design
    ok = design.compared[design.compared["status"] == "ok"]
    lines = []
    if design.tuned and design.compared.empty:
        lines.append(
            "Tuning only: no final runs (tuning.final_seeds is empty), so nothing was tested. The best configuration "
            "is in optimization_results.yaml; re-run it on fresh seeds with tuning.final_seeds=[100,101,102,103,104]."
        )
    elif design.tuned:
        trials = design.trials
        per_arm = trials.groupby("tuning_arm").size()
        soup = ok["tuning_arm"].astype(str).str.endswith("_soup")
        seeds = sorted(ok.loc[~soup, "seed"].dropna().unique())
        budget = f"{per_arm.min()}" if per_arm.nunique() <= 1 else f"{per_arm.min()}-{per_arm.max()}"
        metric = (
            trials["config.optimized_metric"].iloc[0]
            if "config.optimized_metric" in trials and len(trials)
            else "the validation metric"
        )
        lines.append(
            f"Tuned: every arm was tuned with the same budget ({budget} Optuna trials each, selected on {metric}, "
            f"never on test data); each arm's best configuration was re-run on fresh seeds "
            f"{', '.join(label(s) for s in seeds)} and tested once. Those final runs are compared here."
            + (
                " Each `<arm>_soup` is that arm's greedy soup of its trials (one run on the tuning seed, not paired)."
                if soup.any()
                else ""
            )
        )
    elif ok[design.arm].nunique() > 1 if design.arm in ok else False:
        lrs = sorted({label(v) for v in ok.get("config.optimizer.lr", pd.Series(dtype=float)).dropna()})
        same = f" (optimizer.lr={lrs[0]})" if len(lrs) == 1 else ""
        lines.append(
            f"Untuned: every arm ran with the same hyperparameters{same}, so the ranking may reflect that choice "
            "more than the arms. For a fair comparison, tune every arm equally on validation: "
            "`python -m transferlab.train -m experiment=tuned_comparison`."
        )
    if "seed" in ok and ok["seed"].nunique() > 1:
        lines.append(
            f"Seeds: {', '.join(label(s) for s in sorted(ok['seed'].dropna().unique()))}; intervals are 95% t-intervals over seeds."
        )
    return lines


def _data_check(ok: pd.DataFrame) -> list[str]:
    if ok.empty:
        return []
    same = (
        ok["test_data_sha256"].nunique() <= 1
        and ok["train_data_sha256"].groupby(ok["seed"]).nunique().le(1).all()
    )
    if same:
        return [
            "Data: every job with the same seed trained on the same split, and all were tested on the same test set."
        ]
    return [
        "Data: WARNING: jobs with the same seed trained or were tested on different data (see results.csv, *_data_sha256)."
    ]


def _table(analysis: Analysis, block: Block) -> list[str]:
    metric, c = analysis.options.metric, block.comparison
    table = c.table
    baseline = table["baseline"].dropna().iloc[0] if table["baseline"].notna().any() else None
    out = pd.DataFrame(
        {key_name(analysis.design.arm): [f"**{a}** (winner)" if a == c.winner else a for a in table["arm"]]}
    )
    out["n"] = table["n"].astype(int).to_numpy()
    out[f"{metric} (95% CI)"] = [
        _pm(m, lo, hi) for m, lo, hi in zip(table["mean"], table["ci_low"], table["ci_high"], strict=True)
    ]
    if baseline is not None and c.pairs is not None:
        out[f"vs {baseline}"] = [
            "baseline" if a == baseline else _pm(d, lo, hi, sign=True)
            for a, d, lo, hi in zip(
                table["arm"], table["diff_mean"], table["diff_ci_low"], table["diff_ci_high"], strict=True
            )
        ]
        out["p"] = [_p(v) for v in table["p_value"]]
        out["p (Holm)"] = [_p(v) for v in table["p_holm"]]
    if c.pairs is not None:
        out["tied with best"] = [
            "top" if a == c.best else ("yes" if t else "no")
            for a, t in zip(table["arm"], table["tied_with_best"], strict=True)
        ]
    costs = block.costs.reindex(table["arm"])
    shown = [c.removesuffix(" mean") for c in costs.columns if c.endswith(" mean")]  # metrics_of's order
    for other in shown:
        if other != metric:
            out[other] = [
                _pm(m, m - h, m + h)
                for m, h in zip(costs[f"{other} mean"], costs[f"{other} half"], strict=True)
            ]
    out["trainable params"] = [f"{int(v):,}" if pd.notna(v) else "-" for v in costs["trainable_params"]]
    out["train s"] = [f"{v:.1f}" for v in costs["train_seconds"]]
    out["peak MB"] = [f"{v:.0f}" for v in costs["peak_memory_mb"]]
    if analysis.tuning is not None and not analysis.tuning.empty:
        tuning = (
            analysis.tuning[analysis.tuning["block"] == _block_key(block)]
            .set_index("arm")
            .reindex(table["arm"])
        )
        out["trials"] = [f"{int(v)}" if pd.notna(v) else "-" for v in tuning["trials"]]
        out["tuning s"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in tuning["tuning_seconds"]]
    return [out.to_markdown(index=False, disable_numparse=True)]


def _block_key(block: Block) -> str:
    values = block.runs["tuning_block"].fillna("") if "tuning_block" in block.runs else pd.Series([""])
    return values.iloc[0] if len(values) else ""


def _verdict(analysis: Analysis, block: Block) -> list[str]:
    c, alpha = block.comparison, analysis.options.alpha
    table = c.table.set_index("arm")
    if c.refused:
        return [f"Paired comparison refused: {c.refused}"]
    if len(table) < 2:
        return ["One arm only: nothing to compare."]
    test = PAIRED_TESTS[analysis.options.test]
    lines = []
    if c.winner:
        worst = table.drop(index=c.winner)["p_holm_vs_best"].max()
        lines.append(
            f"**Winner: {c.winner}**: significantly better than every other arm ({test}, Holm-corrected, largest p = {_p(worst)})."
        )
    else:
        tied = [a for a in c.tied if a != c.best]
        detail = ", ".join(f"{a} (p = {_p(table.at[a, 'p_holm_vs_best'])})" for a in tied)
        lines.append(
            f"No single winner: the top arm by mean, {c.best}, is statistically indistinguishable from {detail} "
            f"({test}, Holm-corrected, alpha = {alpha:g})."
        )
        worse = [a for a in table.index if a not in c.tied]
        if worse:
            listed = ", ".join(f"{a} (p = {_p(table.at[a, 'p_holm_vs_best'])})" for a in worse)
            lines.append(f"Significantly worse than {c.best}: {listed}.")
    baseline = table["baseline"].dropna().iloc[0] if table["baseline"].notna().any() else None
    if baseline is not None:
        others = table.drop(index=baseline)
        sig = others[others["p_holm"] < alpha]
        higher = analysis.higher_is_better
        better = [a for a in sig.index if (sig.at[a, "diff_mean"] > 0) == higher]
        worse = [a for a in sig.index if a not in better]
        same = [a for a in others.index if a not in sig.index]
        parts = []
        if better:
            parts.append(f"significantly better: {', '.join(better)}")
        if worse:
            parts.append(f"significantly worse: {', '.join(worse)}")
        if same:
            parts.append(f"no significant difference: {', '.join(same)}")
        lines.append(f"Against the baseline {baseline}: {'; '.join(parts)}.")
    small = table[table["n"] < SMALL_N]
    if len(small):
        lines.append(
            f"Caution: {', '.join(small.index)} {'has' if len(small) == 1 else 'have'} fewer than {SMALL_N} seeds; "
            "intervals and tests that small are unreliable (add seeds)."
        )
    return lines


def _friedman(analysis: Analysis) -> list[str]:
    f = analysis.friedman
    if f is None:
        return []
    ranks = ", ".join(f"{a} {r:.2f}" for a, r in f["avg_ranks"].items())
    verdict = (
        "the arms' ranks differ"
        if f["p_value"] < analysis.options.alpha
        else "no evidence that the arms' ranks differ"
    )
    return [
        "",
        f"## Across {', '.join(map(key_name, analysis.design.blocks))} (Friedman test, Demšar 2006)",
        "",
        f"Friedman chi2 = {f['statistic']:.2f}, p = {_p(f['p_value'])} over {f['blocks']} blocks and {f['arms']} arms: {verdict}. "
        f"Average ranks (1 = best): {ranks}. Nemenyi critical difference: {f['critical_difference']:.2f} (cd_diagram.png).",
    ]


def _tuning(analysis: Analysis) -> list[str]:
    tuning = analysis.tuning
    if tuning is None or tuning.empty:
        return []
    out = tuning.copy()
    out["chosen hyperparameters"] = [_chosen(analysis, r) for _, r in out.iterrows()]
    out["best value"] = [_num(v, 4) for v in out["best_value"]]
    out["tuning s"] = [f"{v:.0f}" for v in out["tuning_seconds"]]
    columns = [
        "arm",
        "trials",
        "ok",
        "pruned",
        "diverged",
        "failed",
        "best value",
        "tuning s",
        "chosen hyperparameters",
    ]
    if out["block"].nunique() > 1:
        columns.insert(0, "block")
    return [
        "",
        "## Tuning (validation only; part of each arm's cost)",
        "",
        out[columns].to_markdown(index=False, disable_numparse=True),
    ]


def _chosen(analysis: Analysis, row: pd.Series) -> str:
    """The tuned keys and the values the final runs used (read from their resolved configs)."""
    finals = analysis.design.compared
    match = finals[(finals["tuning_arm"] == row["arm"]) & (finals["tuning_block"].fillna("") == row["block"])]
    if match.empty:
        return "- (no final run)"
    final = match.iloc[0]
    keys = json.loads(final["tuning_params"]) if isinstance(final.get("tuning_params"), str) else []
    values = [f"{k}={_value(final.get(f'config.{k}'))}" for k in keys]
    return ", ".join(values).replace("|", "/") or "-"


def _value(value: object) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:.3g}"
    return label(value)


def _method(analysis: Analysis) -> list[str]:
    options = analysis.options
    if not analysis.family_size:
        return []
    test = PAIRED_TESTS[options.test]
    return [
        "",
        "## Method",
        "",
        f"Arms are compared pairwise over matched seeds ({test}; the same seed means the same split, checked by the "
        f"data hashes). Holm's correction runs over all {analysis.family_size} pairwise comparisons in this report, so "
        f"the chance of any false 'significant' claim stays below {options.alpha:g}. Effect sizes are mean paired "
        "differences with 95% t-intervals. Only the metric above is tested (and its value on every eval set, when "
        "the runs have eval sets); the other columns are descriptive.",
    ]
