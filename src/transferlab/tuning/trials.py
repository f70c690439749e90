"""What the Optuna sweeper reads back and writes down: each launched job's outcome (from its
results.json, so every launcher works), the finished final runs of a resumed sweep, the overrides of a
job, and the `optimization_results.yaml` summary."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from optuna.trial import TrialState

from transferlab.core.names import RESULTS_FILE

STALE = "stale"  # user attribute of a trial whose process died; it is run again


def quote(value: str) -> str:
    """An override value Hydra reads back verbatim."""
    if re.fullmatch(r"[\w.:/\-+]+", value) or re.fullmatch(r"\[[\w.,]*\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides(markers: dict[str, str]) -> list[str]:
    """`key=value` overrides, values quoted for Hydra."""
    return [f"{k}={quote(v)}" for k, v in markers.items()]


def finished_trials(study: optuna.Study) -> int:
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(STALE))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial
        return None


def duration(trial: optuna.trial.FrozenTrial) -> float:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return 0.0


def read_record(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / RESULTS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def outcome(ret: JobReturn) -> tuple[TrialState, float | None, str]:
    """A launched trial's state for Optuna, read from its results.json (works with every launcher)."""
    record = read_record(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else None
    if record is None:
        return TrialState.FAIL, None, f"no {RESULTS_FILE} (job status {ret.status.name})"
    status = record.get("status")
    value = (record.get("objective") or {}).get("value")
    if status == "pruned":
        return TrialState.PRUNED, None, ""
    if status == "ok" and value is not None and math.isfinite(value):
        return TrialState.COMPLETE, float(value), ""
    return TrialState.FAIL, None, str(record.get("error") or f"status {status}")


def next_job_index(sweep_dir: Path) -> int:
    numbers = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=-1) + 1


def finished_finals(sweep_dir: Path) -> set[tuple[str, int]]:
    """(study, seed) of every final run that finished ok: a resumed sweep skips them."""
    done = set()
    for path in sweep_dir.glob(f"*/{RESULTS_FILE}"):
        record = read_record(path.parent) or {}
        tuning = (record.get("config") or {}).get("tuning") or {}
        if record.get("status") == "ok" and tuning.get("phase") == "final":
            done.add((tuning.get("study"), record.get("seed")))
    return done


def optimization_results(studies: list[Any], name: str) -> dict[str, Any]:
    """Hydra's Optuna-sweeper format (`name`, `best_params`, `best_value`); with several studies (arms),
    one such entry per study under `arms`, with the trials used and the tuning time."""
    entries = {}
    for s in studies:
        best = best_trial(s.study)
        trials = s.study.get_trials(deepcopy=False)
        counted = [t for t in trials if not t.user_attrs.get(STALE)]
        entries[s.name] = {
            "name": s.name,
            "arm": s.arm,
            "block": s.block_label,
            "best_params": dict(best.params) if best else None,
            "best_value": float(best.value) if best else None,
            "best_trial": best.number if best else None,
            "n_trials": len(counted),
            "states": {
                state.name.lower(): sum(t.state == state for t in counted)
                for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            },
            "tuning_seconds": round(sum(duration(t) for t in trials), 3),
        }
    if len(entries) == 1:
        (entry,) = entries.values()
        return {k: entry[k] for k in ("name", "best_params", "best_value")} | {"details": entry}
    return {"name": name, "arms": entries}
