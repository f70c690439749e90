"""The static strategies: linear probe, partial, full, scratch and BitFit."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import Field

from transferlab.backbones import Backbone
from transferlab.core.errors import TransferlabError
from transferlab.strategies.base import NORM_TYPES, TransferStrategy

log = logging.getLogger(__name__)


class LinearProbe(TransferStrategy):
    """Feature extraction: the whole backbone is frozen and in eval mode; only the head trains.

    `cache_features` (None = automatic: on when training augmentation is off) computes the frozen
    features once, caches them on disk and trains the head on the cache. `head_solver`: `lbfgs` fits
    the head as linear-evaluation protocols do (logistic regression by full-batch L-BFGS on
    standardized cached features, L2 chosen on validation); `sgd` trains it in the training loop (what
    LP-FT continues from); None picks lbfgs when features are cached, else sgd.
    """

    caches_features = True
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

    random_init = True


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
