"""What every config group accepts: types, ranges and relations, checked when the config is composed,
before any directory, download or model is created (pydantic models of the config groups).

`check(cfg)` raises `ConfigError` with one line per mistake: the key, the value given, what is allowed.
Keys a group does not declare are left to Hydra (it refuses unknown keys when composing).
"""

from __future__ import annotations

import os
import typing
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferlab.core import messages, settings
from transferlab.core.errors import TransferlabError
from transferlab.core.names import (
    DEFAULT_OPTIMIZED_METRIC,
    PAIRED_TESTS,
    VALIDATION_METRICS,
    user_metric_problem,
)

SEED_MAX = 2**32 - 1  # numpy's seed range
Probability = Field(ge=0.0, le=1.0)
# Lightning's accepted values (lightning_fabric.connector._PRECISION_INPUT; a test keeps them equal)
PRECISIONS = Literal[
    64, 32, 16, "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
    "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16",
]  # fmt: skip
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
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


class Tuning(_Group):
    n_trials: int = Field(ge=1)
    n_jobs: int = Field(ge=1)
    final_seeds: list[int]


class Report(_Group):
    alpha: float = Field(gt=0.0, lt=1.0)
    test: Literal[tuple(PAIRED_TESTS)]


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
    optimized_metric: str = DEFAULT_OPTIMIZED_METRIC
    optimized_mode: Literal["max", "min"]
    test: bool
    resume: bool
    overwrite: bool = False
    dataset: Dataset
    trainer: Trainer
    optimizer: Optimizer
    head: Head
    backbone: Backbone
    scheduler: Scheduler | None = None
    callbacks: Callbacks | None = None
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


# Config groups whose nodes build a class that declares its own settings (`core.settings`): the kind of
# class each must be (imported only when checked) and an example for the message.
METRIC_EXAMPLE = "torchmetrics.classification.MulticlassPrecision"
DECLARED = {
    "strategy": ("transferlab.strategies.base.TransferStrategy", "transferlab.strategies.Full"),
    "regularizer": (
        "transferlab.strategies.regularizers.Regularizer",
        "transferlab.strategies.regularizers.L2SP",
    ),
    "dataset": (None, "transferlab.data.ImageFolderDataModule"),
}


def check(cfg: DictConfig) -> None:
    """Raise `ConfigError` naming every value its key does not allow (one line each); a `_target_` that
    names nothing, or the wrong kind of class, raises a one-line `TransferlabError`."""
    cfg = cfg.copy()
    paths = cfg.get("paths")
    if isinstance(paths, DictConfig) and OmegaConf.is_interpolation(paths, "output_dir"):
        with open_dict(cfg):  # ${hydra:runtime.output_dir} resolves only inside a Hydra job
            cfg.paths.output_dir = "<run directory>"
    keys = [k for k in (*Run.model_fields, *DECLARED, "metrics") if k in cfg]
    keys = list(dict.fromkeys(keys))
    raw = OmegaConf.to_container(cfg, resolve=False)
    missing = [m for k in keys for m in _missing(raw.get(k), k)]
    if missing:
        raise ConfigError(" ".join(f"{m} is required (it has no default): set {m}=VALUE." for m in missing))
    try:
        data = {k: _resolved(cfg, k) for k in keys}
    except OmegaConfBaseException as exc:  # an interpolation that points nowhere, e.g. ${nope}
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{getattr(exc, 'full_key', None) or 'config'}: {first}.") from None
    found = []
    try:
        Run.model_validate({k: v for k, v in data.items() if k in Run.model_fields})
    except ValidationError as exc:
        found += messages.lines(exc.errors(), data, cfg)
    if found:  # the shared keys first: their check imports nothing, the classes' own settings need them
        raise ConfigError(" ".join(found))
    found += _declared_settings(data, cfg)
    if found:
        raise ConfigError(" ".join(found))


def _declared_settings(data: dict[str, Any], cfg: DictConfig) -> list[str]:
    """What each group's class (strategy, regularizer, data source) declares, checked through `_target_`."""
    from transferlab.core.targets import locate

    found = []
    for group, (kind, example) in DECLARED.items():
        node = data.get(group)
        if not isinstance(node, dict):
            continue
        shared = Run.model_fields.get(group)
        model = _model_of(shared.annotation) if shared else None
        owned = frozenset(model.model_fields) if model else frozenset()
        base = locate(kind, group) if kind else None
        found += settings.check_node(node, group, cfg, kind=base, example=example, owned=owned)
    metric = (
        "torchmetrics.Metric"  # a user's metrics (`transferlab.metrics`): num_classes comes from the data
    )
    metrics = data.get("metrics") or {}
    if not isinstance(metrics, dict):
        found.append(
            f"metrics={metrics}: the metrics config maps names to metric nodes, e.g. "
            f"metrics.precision._target_={METRIC_EXAMPLE}."
        )
        metrics = {}
    for name, node in metrics.items():
        problem = None if node is None else user_metric_problem(name, node)
        if problem:
            found.append(problem)
        elif node is not None:
            where = f"metrics.{name}"
            found += settings.check_node(
                node, where, cfg, locate(metric, where), METRIC_EXAMPLE, frozenset({"num_classes"})
            )
    return found


def _model_of(annotation: Any) -> type[BaseModel] | None:
    inner = [a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type)]
    return next((a for a in inner if issubclass(a, BaseModel)), None)


def _missing(node: Any, key: str) -> list[str]:
    """The keys under `key` whose value is Hydra's mandatory '???'."""
    if isinstance(node, dict):
        return [m for k, v in node.items() for m in _missing(v, f"{key}.{k}")]
    return [key] if node == MISSING else []


def _resolved(cfg: DictConfig, key: str) -> Any:
    node = cfg.get(key)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
