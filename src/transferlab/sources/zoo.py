"""The offline source zoo (`experiment=source_zoo`, `zoo=digits`): source backbones of graded relatedness
and quality, each pretrained once by the `backbone.pretrained=source` machinery (cached by config hash
under `paths.cache_dir/pretrained/`) and exported with its source-task accuracy.

A member is `{experiment: NAME, overrides: [...]}` (a source run) or `null` (random init);
`zoo.overrides` apply to every member (e.g. fewer epochs for a quick zoo).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.core.atomic import atomic_open
from transferlab.core.errors import TransferlabError

log = logging.getLogger(__name__)
INDEX = "zoo.csv"


def member_config(cfg: DictConfig, member: DictConfig) -> DictConfig:
    """`cfg` with `source` set to the member's source experiment (what `ensure_source` builds)."""
    if not member.get("experiment"):
        raise TransferlabError(
            f"zoo member {member} has no experiment; give {{experiment: NAME, overrides: []}}."
        )
    sub = cfg.copy()
    with open_dict(sub):
        sub.source = {
            "experiment": member.experiment,
            "overrides": [*list(member.get("overrides") or []), *list(cfg.zoo.get("overrides") or [])],
        }
    return sub


def ensure_zoo(cfg: DictConfig) -> dict[str, Path | None]:
    """Build (or reuse) every member of `cfg.zoo`; returns {member: run dir} (None = random init) and
    writes `zoo.csv` (member, source experiment, source accuracy, reused, run dir) in the run directory."""
    from transferlab.run.job import train
    from transferlab.run.pretrain import ensure_source

    zoo = cfg.get("zoo")
    if not zoo or not zoo.get("members"):
        raise TransferlabError("No source zoo is configured: add zoo=digits (or a zoo config of your own).")
    found: dict[str, Path | None] = {}
    rows: list[dict[str, Any]] = []
    for name, member in zoo.members.items():
        if member is None:
            found[name] = None
            rows.append({"member": name, "experiment": "random init", "reused": True})
            continue
        info = ensure_source(member_config(cfg, member), run=train)
        found[name] = Path(info["run_dir"])
        rows.append(
            {
                "member": name,
                "experiment": info["experiment"],
                "source_acc": (info.get("metrics") or {}).get("test/acc"),
                "reused": info["reused"],
                "config_hash": info["config_hash"][:12],
                "run_dir": info["run_dir"],
            }
        )
        log.info("Zoo member %s: %s (%s)", name, info["run_dir"], "reused" if info["reused"] else "trained")
    _write_index(cfg, rows)
    return found


def _write_index(cfg: DictConfig, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    out = cfg.paths.get("output_dir")
    if not out or OmegaConf.is_missing(cfg.paths, "output_dir"):
        return
    with atomic_open(Path(out) / INDEX, "w") as f:
        pd.DataFrame(rows).to_csv(f, index=False)
