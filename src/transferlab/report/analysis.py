"""The comparison a report states: per block, the arms' intervals, paired tests against the baseline
and the best arm (Holm-corrected over the whole report), costs, tuning and, across blocks, Friedman."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from transferlab.core.names import DEFAULT_PAIRED_TEST, higher_is_better
from transferlab.report import stats
from transferlab.report.collect import (
    HASH_COLUMNS,
    Design,
    eval_set_metrics,
    label,
    metrics_of,
    set_of,
)


@dataclass
class Options:
    """`report.*` of the sweep's config (or the command line)."""

    metric: str = "test/acc"
    baseline: str | None = None
    alpha: float = 0.05
    test: str = DEFAULT_PAIRED_TEST

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, **overrides: Any) -> Options:
        given = {
            k: v for k, v in ((config or {}).get("report") or {}).items() if k in cls.__dataclass_fields__
        }
        given.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**given)


@dataclass
class Block:
    """One level of the other swept factors (or the whole sweep when nothing else was swept)."""

    name: str
    comparison: stats.Comparison
    runs: pd.DataFrame  # ok runs of this block
    costs: pd.DataFrame  # per arm: other metrics (mean, half-width), params, time, memory
    sets: dict[str, stats.Comparison] = field(default_factory=dict)  # eval-set metric -> its comparison


@dataclass
class Analysis:
    design: Design
    options: Options
    blocks: list[Block] = field(default_factory=list)
    family_size: int = 0
    friedman: dict | None = None
    tuning: pd.DataFrame | None = None  # per arm: trials by status, tuning time, best value
    notes: list[str] = field(default_factory=list)

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.options.metric)


def analyse(design: Design, options: Options) -> Analysis:
    analysis = Analysis(design, options)
    ok = design.compared[design.compared["status"] == "ok"]
    ok = ok[ok[options.metric].notna()] if options.metric in ok else ok.iloc[:0]
    arms = ok[design.arm].map(label) if len(ok) else pd.Series(dtype=str)
    ok = ok.assign(arm=arms, block=_block_labels(ok, design.blocks))
    baseline = options.baseline or ("scratch" if "scratch" in set(arms) else None)
    set_metrics = eval_set_metrics(ok.columns, options.metric)

    def compare(runs: pd.DataFrame, metric: str, hashes: tuple[str, ...]) -> stats.Comparison:
        return stats.compare_arms(
            runs.rename(columns={metric: "value"}),
            baseline=baseline,
            higher_is_better=analysis.higher_is_better,
            test=options.test,
            hash_columns=hashes,
        )

    for name, runs in ok.groupby("block", sort=True):
        block = Block(str(name), compare(runs, options.metric, HASH_COLUMNS), runs, _costs(runs))
        for metric in (m for m in set_metrics if runs[m].notna().any()):  # every eval set is tested too
            block.sets[metric] = compare(runs, metric, (*HASH_COLUMNS, f"test_{set_of(metric)}_data_sha256"))
        analysis.blocks.append(block)
    # Holm over every comparison the report states: every pair of arms, in every block, on every set
    everything = [c for b in analysis.blocks for c in (b.comparison, *b.sets.values())]
    analysis.family_size = stats.finish(everything, options.alpha, analysis.higher_is_better)
    if len(analysis.blocks) > 1:
        means = pd.DataFrame({b.name: b.comparison.table.set_index("arm")["mean"] for b in analysis.blocks}).T
        analysis.friedman = stats.friedman(means, analysis.higher_is_better, options.alpha)
    if design.tuned:
        analysis.tuning = _tuning(design.trials)
    if options.baseline and baseline not in set(arms):
        analysis.notes.append(
            f"report.baseline={options.baseline} is not one of the arms ({', '.join(sorted(set(arms)))})."
        )
    return analysis


def _block_labels(runs: pd.DataFrame, blocks: list[str]) -> pd.Series:
    if not blocks:
        return pd.Series("all", index=runs.index, dtype=object)
    return runs[blocks].apply(lambda r: " / ".join(label(v) for v in r), axis=1).astype(object)


def _costs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm: each metric's mean and interval half-width, trainable parameters, time and memory."""
    out = {}
    for arm, part in runs.groupby("arm", sort=True):
        row: dict[str, Any] = {}
        for metric in metrics_of(part.columns):
            if metric in part and part[metric].notna().any():
                interval = stats.mean_interval(part[metric])
                row[f"{metric} mean"] = interval.mean
                row[f"{metric} half"] = (interval.high - interval.low) / 2
        row["trainable_params"] = part["trainable_params"].mean()
        row["train_seconds"] = part["train_seconds"].mean()
        row["peak_memory_mb"] = part["peak_memory_mb"].max()
        out[arm] = row
    return pd.DataFrame.from_dict(out, orient="index")


def _tuning(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (block, arm): trials by status, tuning time (sum of the trials' wall time), best value."""
    if trials.empty:
        return pd.DataFrame()
    rows = []
    for (block, arm), part in trials.groupby([trials["tuning_block"].fillna(""), "tuning_arm"], sort=True):
        ok = part[part["status"] == "ok"]
        minimize = "config.optimized_mode" in part and (part["config.optimized_mode"] == "min").all()
        best = (ok["objective"].min() if minimize else ok["objective"].max()) if len(ok) else None
        rows.append(
            {
                "block": block,
                "arm": arm,
                "trials": len(part),
                "ok": len(ok),
                "pruned": int((part["status"] == "pruned").sum()),
                "diverged": int((part["status"] == "diverged").sum()),
                "failed": int((~part["status"].isin(["ok", "pruned", "diverged"])).sum()),
                "tuning_seconds": float(part["wall_seconds"].fillna(0).sum()),
                "best_value": best,
            }
        )
    return pd.DataFrame(rows)
