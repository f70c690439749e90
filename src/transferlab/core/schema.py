"""What every config group accepts: types, ranges and relations, checked when the config is composed,
before any directory, download or model is created (pydantic models of the config groups).

`check(cfg)` raises `ConfigError` with one line per mistake: the key, the value given, what is allowed.
Keys a group does not declare are left to Hydra (it refuses unknown keys when composing).
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferlab.core.errors import TransferlabError

SEED_MAX = 2**32 - 1  # numpy's seed range
Probability = Field(ge=0.0, le=1.0)
# Lightning's accepted values (lightning_fabric.connector._PRECISION_INPUT; a test keeps them equal)
PRECISIONS = Literal[
    64, 32, 16, "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
    "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16",
]  # fmt: skip
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
VALIDATION_METRICS = ("val/acc", "val/loss", "val/f1_macro", "val/ece", "val/acc_top5", "val/acc_best")
MISSING = "???"


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
    recheck: Literal["files", "folders"] = "files"
    decoder: Literal["pil", "torchvision"] = "pil"
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
        which = "batch_size" if batch == self.batch_size else "eval_batch_size"
        needed = batch * 3 * self.image_size**2 * 4 * 20  # input floats, x20 for a CNN's activations
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > available:
            raise ValueError(
                f"dataset.image_size={self.image_size} with dataset.{which}={batch}: one batch needs about "
                f"{needed / 2**30:.0f} GiB, this machine has {available / 2**30:.0f} GiB; use a smaller image_size "
                "or batch_size"
            )
        return self


class Trainer(_Group):
    accelerator: Any = "auto"
    max_epochs: int = Field(ge=-1)
    min_epochs: int | None = Field(default=None, ge=0)
    devices: Any = "auto"
    num_nodes: int = Field(ge=1)
    precision: PRECISIONS
    log_every_n_steps: int = Field(ge=1)
    check_val_every_n_epoch: int | None = Field(default=None, ge=1)
    accumulate_grad_batches: int = Field(ge=1)
    gradient_clip_val: float | None = Field(default=None, ge=0.0)
    limit_train_batches: int | float | None = Field(default=None, ge=0)
    limit_val_batches: int | float | None = Field(default=None, ge=0)
    limit_test_batches: int | float | None = Field(default=None, ge=0)
    num_sanity_val_steps: int = Field(ge=-1)
    deterministic: bool | Literal["warn"]
    fast_dev_run: bool | Annotated[int, Field(ge=0)]

    @field_validator("max_epochs")
    @classmethod
    def not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be at least 1 (or -1: until stopped)")
        return value

    @field_validator("accelerator")
    @classmethod
    def known_accelerator(cls, value: Any) -> Any:
        if isinstance(value, dict) or value in ACCELERATORS:  # a dict: an Accelerator to instantiate
            return value
        raise ValueError(f"must be one of {', '.join(ACCELERATORS)}")

    @field_validator("devices")
    @classmethod
    def device_count(cls, value: Any) -> Any:
        """Lightning's forms: a count >= 1, -1 (all), 'auto', '0,1' (indices) or a list of indices."""
        if isinstance(value, bool):
            raise ValueError("must be a count >= 1, -1 (all), auto, or a list of device indices")
        if isinstance(value, int) and (value >= 1 or value == -1):
            return value
        if isinstance(value, str) and (
            value == "auto" or value.lstrip("-").isdigit() and int(value) in (-1, *range(1, 10**6)) or
            all(p.strip().isdigit() for p in value.split(",")) and "," in value
        ):  # fmt: skip
            return value
        if isinstance(value, list) and value and all(isinstance(i, int) and i >= 0 for i in value):
            return value
        raise ValueError("must be a count >= 1, -1 (all), auto, or a list of device indices")


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
    trainable_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
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


class EvalSet(_Group):
    shift: Literal["rotation", "gaussian_noise", "invert", "blur", "elastic"] | None = None
    folder: str | None = None
    dataset: str | None = None
    seed: int = Field(default=0, ge=0, le=SEED_MAX)


class Calibration(_Group):
    enabled: bool


class Wise(_Group):
    enabled: bool
    alphas: list[Annotated[float, Probability]] = Field(min_length=1)
    apply: bool = False
    head: Literal["interpolate", "finetuned"] = "interpolate"


class Ema(_Group):
    enabled: bool
    decay: float = Probability
    warmup: bool = True


class Run(_Group):
    seed: int = Field(ge=0, le=SEED_MAX)
    optimized_metric: str = "val/acc"
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
    eval_sets: dict[str, EvalSet | None] | None = None
    calibration: Calibration | None = None
    wise: Wise | None = None
    ema: Ema | None = None

    @field_validator("optimized_metric")
    @classmethod
    def validation_only(cls, name: str) -> str:
        """Model selection and tuning look at validation metrics only."""
        if name.startswith("test/"):
            raise ValueError(
                "is a test metric: selecting on it leaks the test set into the result; use the validation "
                f"metric, optimized_metric=val/{name.removeprefix('test/')}"
            )
        if not name.startswith("val/"):
            raise ValueError(f"is not a validation metric; use one of {', '.join(VALIDATION_METRICS)}")
        return name


def check(cfg: DictConfig) -> None:
    """Raise `ConfigError` naming every value its key does not allow (one line each)."""
    cfg = cfg.copy()
    paths = cfg.get("paths")
    if isinstance(paths, DictConfig) and OmegaConf.is_interpolation(paths, "output_dir"):
        with open_dict(cfg):  # ${hydra:runtime.output_dir} resolves only inside a Hydra job
            cfg.paths.output_dir = "<run directory>"
    keys = [k for k in Run.model_fields if k in cfg]
    raw = OmegaConf.to_container(cfg, resolve=False)
    missing = [m for k in keys for m in _missing(raw.get(k), k)]
    if missing:
        raise ConfigError(" ".join(f"{m} is required (it has no default): set {m}=VALUE." for m in missing))
    try:
        data = {k: _resolved(cfg, k) for k in keys}
    except OmegaConfBaseException as exc:  # an interpolation that points nowhere, e.g. ${nope}
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{getattr(exc, 'full_key', None) or 'config'}: {first}.") from None
    try:
        Run.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(" ".join(_lines(exc, data, cfg))) from None


def _missing(node: Any, key: str) -> list[str]:
    """The keys under `key` whose value is Hydra's mandatory '???'."""
    if isinstance(node, dict):
        return [m for k, v in node.items() for m in _missing(v, f"{key}.{k}")]
    return [key] if node == MISSING else []


def _resolved(cfg: DictConfig, key: str) -> Any:
    node = cfg.get(key)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _lines(exc: ValidationError, data: dict[str, Any], cfg: DictConfig) -> list[str]:
    """One line per key: a union's several complaints about one value become one sentence."""
    found: dict[str, tuple[Any, list[str]]] = {}
    for error in exc.errors():
        path, value, too_short = _key_path(error["loc"], data)
        message = "has too few values" if too_short and error["type"] == "missing" else _explain(error)
        found.setdefault(".".join(map(str, path)), (value, []))[1].append(message)
    lines = []
    for key, (value, messages) in found.items():
        if len(found) > 1 and _interpolated(cfg, key):
            continue  # e.g. dataset.seed=${seed}: the key it copies is named already
        distinct = list(dict.fromkeys(messages))
        if "must be a number" in distinct and "must be a whole number" in distinct:
            distinct.remove("must be a whole number")
        message = "must be " + " or ".join(m.removeprefix("must be ") for m in distinct)
        message = message if all(m.startswith("must be ") for m in distinct) else "; ".join(distinct)
        if message.startswith("dataset.image_size="):  # the relation's own sentence names the keys
            lines.append(message + ".")
            continue
        shown = "" if isinstance(value, dict) else f"={_show(value)}"
        lines.append(f"{key}{shown}: {message}.")
    return lines


def _key_path(loc: tuple, data: dict[str, Any]) -> tuple[list, Any, bool]:
    """The config key an error is about (pydantic adds union member names to `loc`), its value, and
    whether the location points past the end of a list (too few values)."""
    path, value = [], data
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list | tuple) and isinstance(part, int):
            if part >= len(value):
                return path, value, True
            value = value[part]
        else:
            break
        path.append(part)
    return path, value, False


def _interpolated(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    try:
        return isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, leaf)
    except Exception:
        return False


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
