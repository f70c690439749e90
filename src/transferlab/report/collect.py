"""A sweep directory -> one row per job, read from the jobs' results.json files only (any launcher),
and what the report compares: which runs, which column names the arms, which columns the blocks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser

from transferlab.core.names import OOD_MEAN, REPORT_METRICS, RESULTS_FILE

METRICS = REPORT_METRICS  # the report's columns (a user's own test/<name> metrics join them: `metrics_of`)
ROW_FIELDS = (
    "status",
    "strategy",
    "backbone",
    "dataset",
    "experiment",
    "seed",
    "trainable_params",
    "total_params",
    "train_seconds",
    "wall_seconds",
    "peak_memory_mb",
    "weights_sha256",
    "wandb_project",
    "wandb_group",
    "wandb_id",
    "error",
)
# Overrides that choose a config group map to the run's own name for it.
GROUP_COLUMNS = {
    "strategy": "strategy",
    "backbone": "backbone",
    "dataset": "dataset",
    "seed": "seed",
    "experiment": "experiment",
}
# Keys that never define what is compared.
NOT_COMPARED = (
    "hydra.",
    "paths.",
    "tuning.",
    "report.",
    "logger",
    "callbacks",
    "trainer.enable_progress_bar",
    "dataset.cv_fold",  # the folds of one cross-validated trial (tuning.cv_folds)
)
SIZE_KEYS = ("config.dataset.samples_per_class",)
DEPTH_KEYS = ("config.strategy.trainable_stages",)
HASH_COLUMNS = ("train_data_sha256", "val_data_sha256", "test_data_sha256")


def find_results(sweep_dir: Path) -> list[Path]:
    """Every job's results.json below `sweep_dir` (hidden folders skipped), in job order."""
    found = [
        p
        for p in sweep_dir.glob(f"**/{RESULTS_FILE}")
        if not any(part.startswith(".") for part in p.relative_to(sweep_dir).parts)
    ]
    return sorted(found, key=lambda p: _natural(p.parent.relative_to(sweep_dir).as_posix()))


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in name.replace("/", " / ").split())


# A transferlab record has these (every run writes them from its start): anything else is another tool's.
RECORD_KEYS = ("status", "strategy", "backbone", "dataset", "config")
STATUSES = ("running", "ok", "failed", "diverged", "pruned", "interrupted")


def read_record(path: Path) -> dict[str, Any]:
    """A job's results.json, or `ValueError` saying in a few words why it is not a transferlab record."""
    try:
        text = path.read_bytes().decode("utf-8")
        record = json.loads(text)
    except UnicodeDecodeError:
        raise ValueError("binary, not JSON") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise ValueError(f"unreadable ({exc.strerror})") from None
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not a transferlab record")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing or record.get("status") not in STATUSES:
        raise ValueError(f"not a transferlab record (no {', '.join(missing) or 'known status'})")
    return record


def load_rows(sweep_dir: Path) -> pd.DataFrame:
    """One row per job: run fields, metrics, data hashes, tuning marks, swept overrides and the
    flattened resolved config (`config.<key>` columns). Files that are not transferlab records are left
    out and listed in `rows.attrs["rejected"]` (job, reason)."""
    rows, rejected = [], []
    for path in find_results(sweep_dir):
        try:
            record = read_record(path)
        except ValueError as exc:
            rejected.append((path.relative_to(sweep_dir).as_posix(), str(exc)))
            continue
        row: dict[str, Any] = {"job": path.parent.relative_to(sweep_dir).as_posix() or "."}
        row.update({k: record.get(k) for k in ROW_FIELDS})
        row.update({m: (record.get("metrics") or {}).get(m) for m in METRICS})
        row.update(_eval_set_fields(record))
        if record.get("soup"):  # a soup trains nothing itself: its training is its ingredients'
            row["train_seconds"] = record["soup"].get("train_seconds")
        row["overrides"] = json.dumps(record.get("overrides") or [])
        splits = ((record.get("data") or {}).get("split_sha256")) or {}
        for split in ("train", "val", "test"):
            row[f"{split}_data_sha256"] = splits.get(split)
        data = record.get("data") or {}  # the labels a run saw, and where its validation came from
        row["labels_used"], row["val_source"] = data.get("labels_used"), data.get("val_source")
        row["source_acc"] = _source_acc(record)
        tuning = record.get("tuning") or {}
        for key in ("phase", "arm", "block", "study", "trial"):
            row[f"tuning_{key}"] = tuning.get(key)
        row["tuning_params"] = json.dumps(tuning["params"]) if tuning.get("params") is not None else None
        row["objective"] = (record.get("objective") or {}).get("value")
        config = pd.json_normalize(record.get("config") or {}, sep=".").to_dict("records")
        row.update({f"config.{k}": _scalar(v) for k, v in (config[0] if config else {}).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["rejected"] = rejected
    return frame


def _source_acc(record: dict[str, Any]) -> float | None:
    """The source-task test accuracy of the exported backbone a run started from (None: random, hub)."""
    meta = (record.get("weights") or {}).get("from_run") or {}
    acc = (meta.get("metrics") or {}).get("test/acc")
    return float(acc) if acc is not None else None


def _eval_set_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Every eval set's and WiSE-FT's metrics, each set's data hash, and the WiSE-FT curve (JSON)."""
    metrics = record.get("metrics") or {}
    fields: dict[str, Any] = {
        m: v for m, v in metrics.items() if m.startswith(("test/", "wise/")) and m not in METRICS
    }
    for name, spec in (record.get("eval_sets") or {}).items():
        fields[f"test_{name}_data_sha256"] = (spec or {}).get("sha256")
    curve = (record.get("wise") or {}).get("curve")
    fields["wise_curve"] = json.dumps(curve) if curve else None
    return fields


def eval_set_metrics(columns, metric: str) -> list[str]:
    """The eval-set versions of an in-distribution test metric (`test/acc` -> `test/<set>/acc` for every
    set in `columns`, then `test/ood_mean/acc`); none for any other metric."""
    parts = metric.split("/")
    if len(parts) != 2 or parts[0] != "test":
        return []
    found = [c for c in columns if c.startswith("test/") and c.count("/") == 2 and c.endswith(f"/{parts[1]}")]
    return sorted(c for c in found if c != OOD_MEAN.format(parts[1])) + [
        c for c in found if c == OOD_MEAN.format(parts[1])
    ]


def metrics_of(columns) -> list[str]:
    """The report's metric columns among `columns`: ours, then `test/<name>` of every metric the runs'
    `metrics` config adds (a user's own, `transferlab.metrics`)."""
    own = [m for m in METRICS if m in columns]
    users = {c.split(".")[2] for c in columns if c.startswith("config.metrics.") and c.count(".") >= 3}
    return [*own, *(f"test/{n}" for n in sorted(users) if f"test/{n}" in columns)]


def set_of(metric: str) -> str:
    """`test/<set>/<name>` -> `<set>`."""
    return metric.split("/")[1]


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def swept_keys(rows: pd.DataFrame) -> list[str]:
    """Columns of the keys that the jobs' overrides (parsed by Hydra) set to different values."""
    parser = OverridesParser.create()
    values: dict[str, set[str]] = {}  # insertion-ordered: keys in the order the user wrote them
    for overrides in rows["overrides"]:
        for override in parser.parse_overrides(json.loads(overrides)):
            key = override.key_or_group
            if override.is_delete() or key.startswith(NOT_COMPARED):
                continue
            values.setdefault(key, set()).add(override.get_value_element_as_str())
    columns = [GROUP_COLUMNS.get(k, f"config.{k}") for k, seen in values.items() if len(seen) > 1]
    return [c for c in columns if c in rows]


@dataclass
class Design:
    """What the report compares: the runs, the column naming the arms, the columns naming blocks."""

    compared: pd.DataFrame  # runs compared (tuned sweeps: the final runs only)
    arm: str  # column whose values are the arms
    blocks: list[str]  # columns of other swept factors; arms are compared within each block
    tuned: bool  # arms were tuned on validation before the final runs
    trials: pd.DataFrame  # tuning trials (empty for untuned sweeps)


def design(rows: pd.DataFrame) -> Design:
    phase = rows.get("tuning_phase", pd.Series(index=rows.index, dtype=object))
    trials = rows[phase == "trial"]
    if phase.notna().any():
        compared = rows[phase == "final"]
        blocks = ["tuning_block"] if compared["tuning_block"].fillna("").nunique() > 1 else []
        return Design(compared, "tuning_arm", blocks, True, trials)
    keys = [k for k in swept_keys(rows) if k != "seed"]
    if "experiment" in rows and rows["experiment"].nunique() > 1 and "experiment" not in keys:
        keys.insert(0, "experiment")  # several experiments swept together: each is a block
    arm = "strategy" if "strategy" in keys or not keys else keys[-1]
    return Design(rows, arm, [k for k in keys if k != arm], False, trials)


def label(value: Any) -> str:
    """A cell value as people write it (5 rather than 5.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def key_name(column: str) -> str:
    """A column as the user wrote its key (without the `config.` prefix)."""
    return {"tuning_arm": "arm", "tuning_block": "block"}.get(column, column.removeprefix("config."))
