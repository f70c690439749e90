"""What frozen parts let a strategy skip: a frozen backbone's features cached once (linear probe, k-NN),
a frozen prefix's activations cached once (partial fine-tuning), and a head fitted outright on cached
features (the L-BFGS probe, the k-NN). Each records what it did in the run's record."""

from __future__ import annotations

import logging
from typing import Any

from transferlab.core.errors import TransferlabError
from transferlab.data.features import CachedFeatures
from transferlab.data.prefix import FrozenPrefix
from transferlab.strategies.context import RunContext
from transferlab.strategies.probe import KNNHead, fit_linear_head

log = logging.getLogger(__name__)
DIRECT_SOLVERS = ("lbfgs", "knn")  # heads fitted outright, without the training loop


def feature_cache(ctx: RunContext, strategy: Any, module: Any) -> Any:
    """The target data as cached frozen-backbone features when `strategy.cache_features` says so (None:
    when augmentation is off, or for a k-NN); resolves `strategy.head_solver` when it is automatic."""
    datamodule, solver, cache = ctx.datamodule, strategy.head_solver, strategy.cache_features
    augment_on = datamodule.augment.active
    if solver in DIRECT_SOLVERS and augment_on:
        raise TransferlabError(
            f"strategy.head_solver={solver} fits the head once on fixed features, but training "
            "augmentation is on (dataset.augment): the features would change every epoch. Set "
            "dataset.augment.enabled=false, or strategy.head_solver=sgd to train the head with augmentation."
        )
    if cache is None:
        cache = not augment_on or solver == "knn"
    elif cache and augment_on:
        log.warning(
            "strategy.cache_features=true: training augmentation is ignored (features are cached once)."
        )
    if solver is None:
        strategy.head_solver = "lbfgs" if cache else "sgd"
    ctx.record["feature_cache"] = {"enabled": bool(cache)}
    if not cache:
        return datamodule
    cached = CachedFeatures(datamodule, module.backbone, ctx.feature_cache_dir, device=ctx.device)
    cached.setup()
    module.use_cached_features = True
    ctx.record["feature_cache"].update(hits=cached.hits, misses=cached.misses, dir=str(cached.cache_dir))
    return cached


def fit_head(module: Any, features: CachedFeatures, strategy: Any) -> dict[str, Any]:
    """The head of an L-BFGS probe or a k-NN, fitted on the cached features (no training loop)."""
    train, val = features.tensors["train"], features.tensors["val"]
    if strategy.head_solver == "knn":
        module.replace_head(
            KNNHead(*train, module.num_classes, k=strategy.k, temperature=strategy.temperature)
        )
        return {"solver": "knn", "k": strategy.k, "temperature": strategy.temperature, "bank": len(train[1])}
    head, fit = fit_linear_head(train, val, module.num_classes)
    module.replace_head(head)
    log.info("L-BFGS probe: L2 %g chosen on validation (val/acc per L2: %s).", fit.l2, fit.val_acc)
    return vars(fit)


def _why_no_prefix(strategy: Any, module: Any, datamodule: Any) -> str | None:
    if strategy.train_bn:
        return "frozen BatchNorm layers train (strategy.train_bn=true)"
    if getattr(datamodule, "augment", None) is None or datamodule.augment.active:
        return "training augmentation is on"
    regularizer = module.regularizer
    if regularizer is not None and not regularizer.works_on_cached_prefix:
        return f"regularizer={regularizer.name} needs the whole network each step"
    return None


def prefix_cache(ctx: RunContext, strategy: Any, module: Any) -> tuple[FrozenPrefix | None, Any]:
    """(prefix, data): the frozen prefix's activations cached and the prefix skipped, when that is exact;
    else (None, the target data). The log and the record say whether it is used and why not."""
    datamodule = ctx.datamodule
    why_not = _why_no_prefix(strategy, module, datamodule)
    prefix = FrozenPrefix(module.backbone.model, module.frozen_ids) if why_not is None else None
    if prefix is not None and prefix.boundary is None:
        why_not = "no leading stage is frozen"
    if prefix is not None and why_not is None:
        x, _ = next(iter(datamodule.eval_dataloader("train")))
        if not prefix.agrees(x[:8]):
            why_not = "the backbone's forward is not a plain sequence of its stages (results would differ)"
    if why_not is not None:
        log.info("Frozen-prefix cache not used: %s.", why_not)
        ctx.record["prefix_cache"] = {"enabled": False, "why_not": why_not}
        return None, datamodule
    cached = CachedFeatures(
        datamodule,
        module.backbone,
        ctx.feature_cache_dir,
        device=ctx.device,
        compute=prefix.activations,
        kind=f"prefix:{prefix.boundary}",
    )
    cached.setup()
    prefix.skip()
    log.info(
        "Frozen-prefix cache used: %s computed once, the model trains from there.", "+".join(prefix.names)
    )
    ctx.record["prefix_cache"] = {
        "enabled": True,
        "boundary": prefix.boundary,
        "modules": prefix.names,
        "hits": cached.hits,
    }
    return prefix, cached
