"""Registers `hydra/sweeper=transferlab_optuna`. Hydra imports this module while it scans for plugins,
so it stays light: Optuna and the implementation are imported only when a sweep starts.

Keys shared with Hydra's own Optuna sweeper keep their names and meaning: `sampler`, `direction`,
`storage`, `study_name`, `n_trials`, `n_jobs`, `max_failure_rate`, `params`.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf structured configs)

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    _partial_: bool = True  # one fresh sampler per study
    seed: Optional[int] = 0  # noqa: UP045
    n_startup_trials: int = 10
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    _partial_: bool = True
    seed: Optional[int] = 0  # noqa: UP045


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 2
    n_warmup_steps: int = 3


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    reduction_factor: int = 3


@dataclass
class ThresholdPrunerConf:
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: Optional[float] = None  # noqa: UP045
    upper: Optional[float] = None  # noqa: UP045
    n_warmup_steps: int = 0


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class TransferlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.transferlab_optuna_sweeper.optuna_sweeper.TransferlabOptunaSweeper"
    # hydra/sweeper/sampler=tpe|random, hydra/sweeper/pruner=median|hyperband|threshold|nop
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])  # noqa: UP006
    sampler: Any = MISSING
    pruner: Any = MISSING
    # Report per-epoch val metrics to the study and stop hopeless trials early.
    prune: bool = True
    direction: str = "maximize"
    # null: an append-only journal file in the sweep directory (resume = run again with that directory).
    storage: Optional[str] = None  # noqa: UP045
    study_name: Optional[str] = None  # noqa: UP045
    # Trials per study (per arm); n_jobs trials of each study are launched together.
    n_trials: int = 20
    n_jobs: int = 1
    # Stop the sweep when a larger share of a batch of trials fails.
    max_failure_rate: float = 1.0
    # Extra search dimensions in Hydra's override grammar, e.g. {optimizer.lr: "tag(log, interval(1e-4, 1e-1))"};
    # each config group's own `search_space` (e.g. strategy.search_space) is used too.
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045
    # Arms compared after equal tuning: a list of strategies, or {name: [overrides]}; null = one study.
    arms: Any = None
    # Fresh seeds for re-running each study's best configuration, tested once.
    final_seeds: List[int] = field(default_factory=list)  # noqa: UP006


_store = ConfigStore.instance()
for _name, _node in (("tpe", TPESamplerConf), ("random", RandomSamplerConf)):
    _store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="transferlab")
for _name, _node in (
    ("median", MedianPrunerConf),
    ("hyperband", HyperbandPrunerConf),
    ("threshold", ThresholdPrunerConf),
    ("nop", NopPrunerConf),
):
    _store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="transferlab")
_store.store(
    group="hydra/sweeper",
    name="transferlab_optuna",
    node=TransferlabOptunaSweeperConf,
    provider="transferlab",
)


class TransferlabOptunaSweeper(Sweeper):
    """Thin shell over `transferlab.tuning.sweeper.OptunaSweeperImpl` (imported on first use)."""

    def __init__(self, **kwargs: Any) -> None:
        from transferlab.tuning.sweeper import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:  # noqa: UP006
        return self.sweeper.sweep(arguments)
