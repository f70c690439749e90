"""The static strategies: linear probe, partial, full, scratch and BitFit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from transferlab.backbones import Backbone
from transferlab.backbones.weights import export_backbone
from transferlab.core.errors import TransferlabError
from transferlab.strategies.base import NORM_TYPES, TransferStrategy
from transferlab.strategies.caching import DIRECT_SOLVERS, feature_cache, fit_head, prefix_cache
from transferlab.strategies.context import RunContext

log = logging.getLogger(__name__)


class LinearProbe(TransferStrategy):
    """Feature extraction: the whole backbone is frozen and in eval mode; only the head trains.

    `cache_features` (None = automatic: on when training augmentation is off) computes the frozen
    features once, caches them on disk and trains the head on the cache. `head_solver`: `lbfgs` fits
    the head as linear-evaluation protocols do (logistic regression by full-batch L-BFGS on
    standardized cached features, L2 chosen on validation); `sgd` trains it in the training loop (what
    LP-FT continues from); None picks lbfgs when features are cached, else sgd.
    """

    SOLVERS = ("lbfgs", "sgd")

    def __init__(self, cache_features: bool | None = None, head_solver: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.cache_features = cache_features
        if head_solver is not None and head_solver not in self.SOLVERS:
            raise TransferlabError(
                f"strategy.head_solver={head_solver} is not one of {', '.join(self.SOLVERS)} (or null: automatic)."
            )
        self.head_solver = head_solver

    def trainable_stages(self, n_stages: int, epoch: int) -> set[int]:
        return set()

    def prepare_data(self, ctx: RunContext, module: Any) -> Any:
        """The frozen features, cached once when `cache_features` says so (`caching.feature_cache`)."""
        return feature_cache(ctx, self, module)

    def fit(self, ctx: RunContext, trainer: Any, module: Any, data: Any, ckpt_path: str | None) -> None:
        """`head_solver` lbfgs or knn: the head fitted outright on the cached features (recorded as
        `probe`), then validated; sgd: the training loop."""
        if self.head_solver not in DIRECT_SOLVERS:
            return super().fit(ctx, trainer, module, data, ckpt_path)
        ctx.record["probe"] = fit_head(module, data, self)
        trainer.validate(module, datamodule=data, verbose=False)
        return None


class KNN(LinearProbe):
    """A zero-training baseline: DINO's weighted k-NN on the frozen, cached features (cosine
    similarity, the k nearest training samples vote with weight exp(sim / temperature))."""

    SOLVERS = ("knn",)

    def __init__(
        self,
        k: Annotated[int, Field(ge=1)] = 20,
        temperature: Annotated[float, Field(gt=0.0)] = 0.07,
        **kwargs: Any,
    ):
        kwargs.setdefault("head_solver", "knn")
        super().__init__(**kwargs)
        self.k, self.temperature = int(k), float(temperature)
        if self.k < 1 or self.temperature <= 0:
            raise TransferlabError(
                f"strategy.k={self.k} must be at least 1 and strategy.temperature={self.temperature} above 0."
            )

    def export(self, module: Any, out: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """A k-NN has no head to export: the backbone only."""
        return export_backbone(self.export_model(module.backbone), out, meta)


class Partial(TransferStrategy):
    """The last `trainable_stages` stages and the head train; earlier stages are frozen (BN in eval).

    `trainable_fraction` (0 < f <= 1) instead picks the fewest last stages that hold at least that
    fraction of the backbone's parameters, which compares fairly across architectures.
    """

    def __init__(
        self,
        trainable_stages: Annotated[int, Field(ge=0)] = 1,
        cache_prefix: bool | None = None,
        trainable_fraction: Annotated[float, Field(gt=0.0, le=1.0)] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.k = int(trainable_stages)
        self.cache_prefix = cache_prefix
        self.fraction = None if trainable_fraction is None else float(trainable_fraction)
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise TransferlabError(
                f"strategy.trainable_fraction={trainable_fraction} must be in (0, 1]: the share of the "
                "backbone's parameters to train (e.g. 0.1), or null to use strategy.trainable_stages."
            )
        self.trained_share: float | None = None

    def check(self, backbone: Backbone) -> None:
        n = len(backbone.stages)
        sizes = [sum(p.numel() for p in ps) for ps in backbone.stage_parameters()]
        total = sum(sizes) or 1
        if self.fraction is not None:
            self.k = next(
                k for k in range(1, n + 1) if sum(sizes[n - k :]) >= self.fraction * total * (1 - 1e-9)
            )
        if not 0 <= self.k <= n:
            names = ", ".join(f"{i}:{s.name}" for i, s in enumerate(backbone.stages))
            raise TransferlabError(
                f"strategy.trainable_stages={self.k} but backbone '{backbone.name}' has {n} stages ({names}); "
                f"choose 0..{n} (0 = head only, {n} = everything)."
            )
        self.trained_share = round(sum(sizes[n - self.k :]) / total, 4) if self.k else 0.0
        if self.fraction is not None:
            log.info(
                "strategy.trainable_fraction=%g: the last %d of %d stages train (%.1f%% of the backbone's parameters).",
                self.fraction,
                self.k,
                n,
                100 * self.trained_share,
            )

    def trainable_stages(self, n_stages: int, epoch: int) -> set[int]:
        return set(range(n_stages - self.k, n_stages))

    _prefix = None  # the frozen prefix skipped while training on its cached activations

    def prepare_data(self, ctx: RunContext, module: Any) -> Any:
        """The frozen prefix's activations, cached once, when that is exact (`caching.prefix_cache`)."""
        if self.cache_prefix is False:
            return ctx.datamodule
        self._prefix, data = prefix_cache(ctx, self, module)
        return data

    def after_test(self, module: Any) -> None:
        """The whole network again (the skipped prefix back), for what follows and the export."""
        if self._prefix is not None:
            self._prefix.restore()
            self._prefix = None

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["trainable_stages"] = config.pop("k")
        config["trainable_fraction"] = config.pop("fraction")
        return config


class Full(TransferStrategy):
    """Everything trains; `backbone_lr_mult` lowers the backbone's learning rate and `layer_decay`
    multiplies it by `layer_decay ** (distance from the last layer)`, with timm's layers (layer-wise lr
    decay as `timm.optim.param_groups_layer_decay`)."""

    def __init__(self, layer_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.layer_decay = float(layer_decay)

    def check(self, backbone: Backbone) -> None:
        if not 0.0 < self.layer_decay <= 1.0:
            raise TransferlabError(
                f"strategy.layer_decay={self.layer_decay} must be in (0, 1]; 1 disables it."
            )

    # layer_decay is applied per timm layer by `strategies.param_groups` (as timm's param_groups_layer_decay)


class Scratch(Full):
    """The no-transfer baseline: random initialisation (backbone.pretrained is ignored), all trains."""

    def initial_weights(self, requested: Any) -> Any:
        if requested not in (False, None):
            log.info("Strategy %s starts from random weights: backbone.pretrained is ignored.", self.name)
        return False


class BitFit(TransferStrategy):
    """Only bias terms (and, with `train_norm`, normalization weights and biases) plus the head train."""

    def __init__(self, train_norm: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.train_norm = bool(train_norm)

    def trainable_parameters(self, backbone: Backbone, epoch: int) -> set[int]:
        ids = set()
        for module in backbone.modules():
            is_norm = isinstance(module, NORM_TYPES)
            for pname, p in module.named_parameters(recurse=False):
                if (is_norm and self.train_norm) or (not is_norm and pname == "bias"):
                    ids.add(id(p))
        return ids
