"""What every config group accepts: types, ranges and relations, checked when the config is composed,
before any directory, download or model is created (pydantic models of the config groups).

`check(cfg)` raises `ConfigError` with one line per mistake: the key, the value given, what is allowed.
Keys a group does not declare are left to Hydra (it refuses unknown keys when composing).
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferlab.core.errors import TransferlabError

SEED_MAX = 2**32 - 1  # numpy's seed range
Probability = Field(ge=0.0, le=1.0)


class ConfigError(TransferlabError):
    """A config value outside what its key allows."""


class _Group(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class Augment(_Group):
    enabled: bool
    zoom: tuple[float, float]
    shear: float = Field(ge=0.0, le=90.0)
    rotation: float = Field(ge=0.0, le=180.0)
    translate: float = Field(ge=0.0, lt=1.0)
    hflip: float = Probability

    @field_validator("zoom")
    @classmethod
    def ordered_scale(cls, zoom: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < zoom[0] <= zoom[1] <= 1.0:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1 (a fraction of the image area)")
        return zoom


class Dataset(_Group):
    image_size: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)
    val_fraction: float = Field(gt=0.0, lt=1.0)
    classes: list[int | str] | None = None
    samples_per_class: int | None = Field(default=None, ge=1)
    augment: Augment
    num_workers: int = Field(ge=0)
    seed: int = Field(ge=0, le=SEED_MAX)
    verify: Literal["full", "header", "none"] = "full"
    hash: Literal["content", "stat"] = "content"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @field_validator("classes")
    @classmethod
    def two_or_more(cls, classes: list | None) -> list | None:
        if classes is not None and len(set(map(str, classes))) < 2:
            raise ValueError("needs at least 2 distinct classes to classify")
        return classes

    @model_validator(mode="after")
    def fits_in_memory(self) -> Dataset:
        batch = max(self.batch_size, self.eval_batch_size or 0)
        needed = batch * 3 * self.image_size**2 * 4 * 20  # input floats, x20 for a CNN's activations
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > available:
            raise ValueError(
                f"dataset.image_size={self.image_size} with batches of {batch}: one batch needs about "
                f"{needed / 2**30:.0f} GiB, this machine has {available / 2**30:.0f} GiB; use a smaller image_size "
                "or batch_size"
            )
        return self


class Trainer(_Group):
    max_epochs: int = Field(ge=-1)
    min_epochs: int | None = Field(default=None, ge=0)
    devices: int | str | list[int]
    num_nodes: int = Field(ge=1)
    precision: int | str
    log_every_n_steps: int = Field(ge=1)
    check_val_every_n_epoch: int | None = Field(default=None, ge=1)
    accumulate_grad_batches: int = Field(ge=1)
    gradient_clip_val: float | None = Field(default=None, ge=0.0)
    limit_train_batches: int | float | None = Field(default=None, ge=0)
    limit_val_batches: int | float | None = Field(default=None, ge=0)
    limit_test_batches: int | float | None = Field(default=None, ge=0)
    num_sanity_val_steps: int = Field(ge=-1)
    deterministic: bool | str
    fast_dev_run: bool | int

    @field_validator("max_epochs")
    @classmethod
    def not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be at least 1 (or -1: until stopped)")
        return value


class Optimizer(_Group):
    lr: float = Field(gt=0.0, le=10.0)
    weight_decay: float = Field(ge=0.0, le=10.0)


class Head(_Group):
    dropout: float = Field(ge=0.0, lt=1.0)
    label_smoothing: float = Field(ge=0.0, lt=1.0)


class Strategy(_Group):
    name: str
    backbone_lr_mult: float = Field(gt=0.0)
    head_lr_mult: float = Field(gt=0.0)
    train_bn: bool
    layer_decay: float | None = Field(default=None, gt=0.0, le=1.0)
    trainable_stages: int | None = Field(default=None, ge=0)
    unfreeze_every: int | None = Field(default=None, ge=1)
    probe_epochs: int | None = Field(default=None, ge=0)
    rank: int | None = Field(default=None, ge=1)
    alpha: float | None = Field(default=None, gt=0.0)
    source_weight: float | None = Field(default=None, ge=0.0)
    k: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, gt=0.0)


class Backbone(_Group):
    name: str = Field(min_length=1)
    pretrained: bool | str
    in_chans: int = Field(ge=1)
    kwargs: dict[str, Any] = {}

    @field_validator("kwargs")
    @classmethod
    def not_ours(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        owned = {
            "num_classes": "the head is sized from the dataset's classes",
            "pretrained": "use backbone.pretrained",
            "in_chans": "use backbone.in_chans",
        }
        taken = [k for k in kwargs if k in owned]
        if taken:
            raise ValueError(
                f"{taken[0]} is set by transferlab ({owned[taken[0]]}); remove it from backbone.kwargs"
            )
        return kwargs


class Scheduler(_Group):
    warmup_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)
    min_lr_ratio: float | None = Field(default=None, ge=0.0, le=1.0)


class Checkpointing(_Group):
    save_top_k: int = Field(ge=-1)
    every_n_epochs: int | None = Field(default=None, ge=0)
    every_n_train_steps: int | None = Field(default=None, ge=1)


class EarlyStopping(_Group):
    patience: int = Field(ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)


class Callbacks(_Group):
    model_checkpoint: Checkpointing | None = None
    early_stopping: EarlyStopping | None = None


class Regularizer(_Group):
    name: Literal["none", "l2_sp", "delta", "bss"]
    alpha: float | None = Field(default=None, ge=0.0)
    beta: float | None = Field(default=None, ge=0.0)
    eta: float | None = Field(default=None, ge=0.0)
    k: int | None = Field(default=None, ge=1)


class Tuning(_Group):
    n_trials: int = Field(ge=1)
    n_jobs: int = Field(ge=1)
    final_seeds: list[int]


class Report(_Group):
    alpha: float = Field(gt=0.0, lt=1.0)
    test: Literal["t", "wilcoxon"]


class Run(_Group):
    seed: int = Field(ge=0, le=SEED_MAX)
    optimized_mode: Literal["max", "min"]
    test: bool
    resume: bool
    overwrite: bool = False
    dataset: Dataset
    trainer: Trainer
    optimizer: Optimizer
    head: Head
    strategy: Strategy
    backbone: Backbone
    scheduler: Scheduler | None = None
    callbacks: Callbacks | None = None
    regularizer: Regularizer | None = None
    tuning: Tuning | None = None
    report: Report | None = None


def check(cfg: DictConfig) -> None:
    """Raise `ConfigError` naming every value its key does not allow (one line each)."""
    cfg = cfg.copy()
    paths = cfg.get("paths")
    if isinstance(paths, DictConfig) and OmegaConf.is_interpolation(paths, "output_dir"):
        with open_dict(cfg):  # ${hydra:runtime.output_dir} resolves only inside a Hydra job
            cfg.paths.output_dir = "<run directory>"
    data = {k: _resolved(cfg, k) for k in Run.model_fields if k in cfg}
    try:
        Run.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(" ".join(_line(e, data) for e in exc.errors())) from None


def _resolved(cfg: DictConfig, key: str) -> Any:
    node = cfg.get(key)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _line(error: dict[str, Any], data: dict[str, Any]) -> str:
    path = [p for p in error["loc"] if p not in ("[key]",)]
    key = ".".join(str(p) for p in path)
    value = data
    for part in path:
        value = (
            value.get(part)
            if isinstance(value, dict)
            else (
                value[part]
                if isinstance(value, list | tuple) and isinstance(part, int) and part < len(value)
                else None
            )
        )
    message = _explain(error)
    if message.startswith("dataset.image_size="):  # the relation's own sentence names the keys
        return message + "."
    shown = "" if isinstance(value, dict) else f"={_show(value)}"
    return f"{key}{shown}: {message}."


def _explain(error: dict[str, Any]) -> str:
    """pydantic's message in the words of a config: what the key allows."""
    kind, ctx = error["type"], error.get("ctx") or {}
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "missing":
        return "is required"
    message = error["msg"].removeprefix("Value error, ")
    return message[0].lower() + message[1:]


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)
