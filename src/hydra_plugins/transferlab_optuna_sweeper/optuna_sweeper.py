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
from omegaconf import DictConfig


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    _partial_: bool = True  # one fresh sampler per study
    seed: Optional[int] = 0  # noqa: UP045
    n_startup_trials: int = 10
    multivariate: bool = False


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 2
    n_warmup_steps: int = 3


@dataclass
class TransferlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.transferlab_optuna_sweeper.optuna_sweeper.TransferlabOptunaSweeper"
    sampler: Any = field(default_factory=TPESamplerConf)
    pruner: Any = field(default_factory=MedianPrunerConf)
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


ConfigStore.instance().store(
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
