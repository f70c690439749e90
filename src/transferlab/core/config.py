"""Composing `train.yaml` outside the command line: tests, benchmarks, tools, source pretraining."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.core.errors import TransferlabError
from transferlab.core.names import RESULTS_FILE

# A config group's hyperparameters for tuning: read by the sweeper, never instantiated.
SEARCH_SPACE_KEY = "search_space"


@contextlib.contextmanager
def _config_module() -> Iterator[None]:
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: reuse its search path
        yield
        return
    with initialize_config_module(config_module="transferlab.conf", version_base="1.3"):
        yield


def compose_train(overrides: Sequence[str] = (), output_dir: str | os.PathLike | None = None) -> DictConfig:
    """The config that `python -m transferlab.train OVERRIDES` would run.

    With `output_dir` (outside a Hydra app), the result goes straight to `transferlab.train.train`:
    Hydra's runtime config is registered so `${hydra:...}` resolves, and outputs land in `output_dir`.
    """
    with _config_module():
        cfg = compose(
            config_name="train", overrides=list(overrides), return_hydra_config=output_dir is not None
        )
    if output_dir is not None:
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            del cfg["hydra"]
    return cfg


def without_search_space(node: DictConfig) -> DictConfig:
    """A copy of a config node without its `search_space` (what `instantiate` should see)."""
    if SEARCH_SPACE_KEY not in node:
        return node
    data = OmegaConf.to_container(node, resolve=True)
    data.pop(SEARCH_SPACE_KEY)
    return OmegaConf.create(data)


def compose_dataset(cfg: DictConfig, name: str, overrides: Sequence[str]) -> DictConfig:
    """The `dataset` node that `dataset=<name> <overrides>` gives, with this run's seed and paths (resolved)."""
    composed = compose_train(
        [f"dataset={name}", f"seed={cfg.seed}", f"paths.cache_dir={cfg.paths.cache_dir}", *overrides]
    )
    return OmegaConf.create(OmegaConf.to_container(composed.dataset, resolve=True))


# ----------------------------------------------------------------------------- what a run records
SECRET_MARKERS = ("API_KEY", "TOKEN", "SECRET", "PASSWORD")


def redact(value: Any) -> Any:
    """Replace values of secret-looking keys and any secret from the environment by '***'."""
    secrets = [
        v for k, v in os.environ.items() if any(m in k.upper() for m in SECRET_MARKERS) and len(v) >= 6
    ]

    def walk(obj: Any, key: str = "") -> Any:
        if isinstance(obj, dict):
            return {k: walk(v, str(k)) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [walk(v, key) for v in obj]
        if isinstance(obj, str):
            if any(m in key.upper() for m in SECRET_MARKERS) and obj:
                return "***"
            for secret in secrets:
                obj = obj.replace(secret, "***")
        return obj

    return walk(value)


# ----------------------------------------------------------------------------- run directories
# What marks a directory as holding a run: never replaced unless resume=true or overwrite=true.
RUN_FILES = (
    RESULTS_FILE,
    "checkpoints",
    "csv",
    "backbone.safetensors",
    "backbone.json",
    "head.safetensors",
)
# Keys a resumed run may change: where things are written, how they are shown, how long it trains.
MAY_CHANGE = (
    "resume",
    "ckpt_path",
    "overwrite",
    "paths.",
    "logger.",
    "callbacks.",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.persistent_workers",
    "dataset.multiprocessing_context",
)


def refuse_changed_resume(before: dict[str, Any], now: dict[str, Any], out: str | os.PathLike) -> None:
    """Raise `TransferlabError` when a run in `out` started with `before` may not be resumed with `now`."""
    changes = config_changes(before, now)
    if changes:
        raise TransferlabError(
            f"resume=true, but {out} holds a run with other settings: {'; '.join(changes)}. Resume with the "
            "settings it was started with (trainer.max_epochs may grow), or give this run its own directory."
        )


def config_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every setting that differs, except those a resumed run may change (and
    trainer.max_epochs / max_steps may only grow)."""
    old = _flat(before)
    new = _flat(now)
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, ABSENT), new.get(key, ABSENT)
        if a == b or _added_empty(a, b):
            continue
        if key in ("trainer.max_epochs", "trainer.max_steps") and _grows(a, b):
            continue
        if key.startswith(MAY_CHANGE) and key not in ("trainer.max_epochs", "trainer.max_steps"):
            continue
        changes.append(f"{key}: {a} -> {b}")
    return changes


ABSENT = "<absent>"


def _added_empty(a: Any, b: Any) -> bool:
    """A setting one side lacks and the other leaves empty (`metrics: {}`, null): a key a later version
    added with its do-nothing default, not a change of the run."""
    return (a == ABSENT and b in ({}, None, ())) or (b == ABSENT and a in ({}, None, ()))


def _grows(a: Any, b: Any) -> bool:
    try:
        return b == -1 or (a != -1 and b >= a)
    except TypeError:
        return False


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists kept whole, as tuples)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat
