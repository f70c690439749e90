"""`experiment=source_selection validate=true`: are the scores right? Every candidate is also tuned and
tested, by the tuned comparison's machinery (the Optuna sweeper of `hparams_search=optuna`, launched as a
Hydra multirun: the same budget per candidate and strategy, final runs on fresh seeds tested once), and
each score's ranking is set against the tuned test accuracy (`sources.agreement`).

Writes beside `selection.csv`: `validation.csv` (one row per strategy and score: tau, r, regret, each with
its bootstrap interval), `validation_runs.csv` (one row per final run) and `validation.json` (settings,
the sweep's command, seconds); the sweep itself (and its report) is in `validation/`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from transferlab.core.atomic import atomic_open
from transferlab.core.errors import TransferlabError
from transferlab.sources.agreement import agreement
from transferlab.sources.candidates import Candidate

log = logging.getLogger(__name__)
CSV = "validation.csv"
RUNS = "validation_runs.csv"
JSON = "validation.json"
SWEEP = "validation"
METRIC = "test/acc"
# the selection run's own overrides that the validation sweep does not repeat
NOT_PASSED = ("validate=", "selection.", "+selection", "validation.", "hydra.", "experiment=", "+experiment=")


def arm_name(candidate: str, strategy: str) -> str:
    """An arm name Hydra's override grammar reads unquoted: `zoo:near`, `full` -> `zoo_near-full`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", candidate) + "-" + strategy


SCRATCH = "scratch"  # the no-transfer arm (validation.scratch): random init, everything trains


def arms(
    candidates: list[Candidate], strategies: list[str], scratch: bool = False
) -> dict[str, tuple[str, str, list[str]]]:
    """{arm: (candidate, strategy, overrides)}: every candidate's backbone with every strategy, and with
    `scratch` the no-transfer baseline (arm and candidate `scratch`, scored by no score)."""
    found: dict[str, tuple[str, str, list[str]]] = {}
    if scratch:
        found[SCRATCH] = (SCRATCH, SCRATCH, [f"strategy={SCRATCH}", "backbone.pretrained=false"])
    for cand in candidates:
        backbone = cand.backbone
        pretrained = backbone.get("pretrained")
        pretrained = (
            str(pretrained).lower() if isinstance(pretrained, bool) or pretrained is None else pretrained
        )
        base = [f"backbone.name={backbone['name']}", f"backbone.pretrained={pretrained or 'false'}"]
        if backbone.get("kwargs"):
            base.append(f"backbone.kwargs={json.dumps(backbone['kwargs'])}")
        for strategy in strategies:
            name = arm_name(cand.name, strategy)
            if name in found:
                raise TransferlabError(
                    f"Candidates {found[name][0]} and {cand.name} give the same arm name {name}; rename one "
                    "({name: NAME, pretrained: PATH})."
                )
            found[name] = (cand.name, strategy, [f"strategy={strategy}", *base])
    return found


def _override_value(items: list[str]) -> str:
    return "[" + ",".join("'" + i.replace("\\", "\\\\").replace("'", "\\'") + "'" for i in items) + "]"


def sweep_command(
    cfg: DictConfig, found: dict[str, tuple[str, str, list[str]]], sweep_dir: Path
) -> list[str]:
    """The validation sweep: this run's own overrides, the arms, the tuning budget, the sweep directory."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    given = list(hydra.overrides.task) if hydra else []
    experiment = (hydra.runtime.choices.get("experiment") if hydra else None) or "source_selection"
    passed = [o for o in given if not o.lstrip("~+").startswith(NOT_PASSED)]
    spec = ",".join(f"{name}:{_override_value(ovs)}" for name, (_, _, ovs) in found.items())
    tuning = cfg.tuning
    return [
        sys.executable,
        "-m",
        "transferlab.train",
        f"experiment={experiment}",
        *passed,
        "selection=null",
        "validate=false",
        "hparams_search=optuna",
        f"tuning.arms={{{spec}}}",
        f"tuning.n_trials={int(tuning.n_trials)}",
        f"tuning.final_seeds=[{','.join(str(int(s)) for s in tuning.final_seeds)}]",
        *[str(o) for o in (settings(cfg).get("overrides") or [])],
        f"hydra.sweep.dir={sweep_dir}",
    ]


def final_runs(sweep_dir: Path, found: dict[str, tuple[str, str, list[str]]]) -> pd.DataFrame:
    """One row per finished final run: candidate, strategy, seed, test accuracy, job."""
    rows = []
    for path in sorted(sweep_dir.glob("*/results.json")):
        record = json.loads(path.read_text())
        tuning = record.get("tuning") or (record.get("config") or {}).get("tuning") or {}
        arm = tuning.get("arm")
        if tuning.get("phase") != "final" or record.get("status") != "ok" or arm not in found:
            continue
        acc = (record.get("metrics") or {}).get(METRIC)
        if acc is None:
            continue
        candidate, strategy, _ = found[arm]
        rows.append(
            {"candidate": candidate, "strategy": strategy, "seed": record.get("seed"), METRIC: float(acc)}
            | {"job": path.parent.name}
        )
    return pd.DataFrame(rows, columns=["candidate", "strategy", "seed", METRIC, "job"])


def agreements(
    table: pd.DataFrame, runs: pd.DataFrame, scores: list[str], n_boot: int, seed: int
) -> pd.DataFrame:
    """validation.csv: for each strategy and score, tau, r and regret with intervals."""
    rows = []
    for strategy, group in runs[runs["candidate"] != SCRATCH].groupby("strategy", sort=False):
        accs = {c: g[METRIC].to_numpy() for c, g in group.groupby("candidate", sort=False)}
        for score in scores:
            values = table.set_index("candidate")[score].astype(float)
            names = [c for c in accs if c in values.index and math.isfinite(values[c])]
            row: dict[str, Any] = {"strategy": strategy, "score": score}
            if len(names) < 2:
                row.update(
                    candidates=len(names), note="fewer than 2 candidates with this score and final runs"
                )
            else:
                row.update(
                    agreement(names, [values[c] for c in names], [accs[c] for c in names], n_boot, seed)
                )
            rows.append(row)
    return pd.DataFrame(rows)


def run_validation(
    cfg: DictConfig, table: pd.DataFrame, candidates: list[Candidate], scores: list[str]
) -> pd.DataFrame:
    """Tune and test every candidate, then how each score's ranking agrees: validation.csv (returned)."""
    opts = settings(cfg)
    strategies = [str(s) for s in (opts.get("strategies") or ["linear_probe", "full"])]
    if not list(cfg.tuning.get("final_seeds") or []):
        raise TransferlabError(
            "validate=true needs final runs to compare with: set tuning.final_seeds, e.g. [100,101,102,103,104]."
        )
    scored = [
        c
        for c in candidates
        if c.name in set(table.loc[~table["note"].astype(str).str.startswith("error:"), "candidate"])
    ]
    found = arms(scored, strategies, scratch=bool(opts.get("scratch", True)))
    out = Path(cfg.paths.output_dir)
    sweep_dir = out / SWEEP
    command = sweep_command(cfg, found, sweep_dir)
    started = time.perf_counter()
    log.info("Validation sweep: %d arms -> %s", len(found), sweep_dir)
    code = subprocess.call(command)
    seconds = time.perf_counter() - started
    runs = final_runs(sweep_dir, found)
    if runs.empty:
        raise TransferlabError(
            f"The validation sweep finished no final run (exit status {code}); see {sweep_dir}."
        )
    n_boot, boot_seed = int(opts.get("bootstrap") or 2000), int(cfg.seed)
    result = agreements(table, runs, scores, n_boot, boot_seed)
    _write(
        out,
        result,
        runs,
        {
            "command": command[1:],
            "exit_status": code,
            "sweep_dir": str(sweep_dir),
            "sweep_seconds": round(seconds, 1),
            "strategies": strategies,
            "arms": {a: {"candidate": c, "strategy": s} for a, (c, s, _) in found.items()},
            "tuning": {"n_trials": int(cfg.tuning.n_trials), "final_seeds": list(cfg.tuning.final_seeds)},
            "bootstrap": n_boot,
            "bootstrap_seed": boot_seed,
            "metric": METRIC,
        },
    )
    _print(result, runs, seconds)
    return result


def _write(out: Path, result: pd.DataFrame, runs: pd.DataFrame, facts: dict[str, Any]) -> None:
    with atomic_open(out / RUNS, "w") as f:
        runs.to_csv(f, index=False)
    with atomic_open(out / CSV, "w") as f:
        result.to_csv(f, index=False)
    records = json.loads(result.to_json(orient="records"))
    with atomic_open(out / JSON, "w") as f:
        json.dump({**facts, "agreement": records}, f, indent=2)
        f.write("\n")


def _print(result: pd.DataFrame, runs: pd.DataFrame, seconds: float) -> None:
    truth = runs.groupby(["candidate", "strategy"], sort=False)[METRIC].agg(["mean", "min", "max", "size"])
    print(f"\nTuned {METRIC} of every candidate (mean, min-max over the final seeds):")
    for (candidate, strategy), row in truth.iterrows():
        print(
            f"  {candidate:<20} {strategy:<13} {row['mean']:.3f} [{row['min']:.3f}, {row['max']:.3f}] n={int(row['size'])}"
        )
    print(
        f"\nScores against tuned {METRIC} ({seconds:.0f} s of tuning and final runs; 95% bootstrap intervals over seeds):"
    )
    for _, row in result.iterrows():
        if not np.isfinite(row.get("tau", math.nan)) and "note" in row and isinstance(row["note"], str):
            print(f"  {row['strategy']:<13} {row['score']:<13} {row['note']}")
            continue
        print(
            f"  {row['strategy']:<13} {row['score']:<13} tau {row['tau']:+.2f} [{row['tau_low']:+.2f}, {row['tau_high']:+.2f}]"
            f"  r {row['r']:+.2f} [{row['r_low']:+.2f}, {row['r_high']:+.2f}]"
            f"  regret {row['regret']:.3f} [{row['regret_low']:.3f}, {row['regret_high']:.3f}]"
            f"  favourite {row['favourite']} (best {row['best']})"
        )


def settings(cfg: DictConfig) -> DictConfig:
    """`cfg.validation` (strategies, bootstrap, overrides), or an empty one (the defaults)."""
    return cfg.get("validation") or OmegaConf.create({})
