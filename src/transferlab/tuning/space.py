"""Search spaces written in Hydra's override grammar, turned into Optuna distributions.

The grammar is the one of Hydra's own Optuna sweeper, so its users feel at home:

    optimizer.lr: tag(log, interval(1e-4, 1e-1))   -> FloatDistribution(log=True)
    strategy.layer_decay: interval(0.5, 1.0)         -> FloatDistribution
    strategy.rank: int(interval(4, 16))              -> IntDistribution (also: interval of two ints)
    strategy.trainable_stages: range(1, 4)           -> IntDistribution(1, 3)
    strategy.rank: choice(4, 8, 16)                  -> CategoricalDistribution
    strategy.train_bn: false                         -> a fixed value (no distribution)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from transferlab.core.config import SEARCH_SPACE_KEY
from transferlab.core.errors import TransferlabError


def to_distribution(override: Override) -> BaseDistribution | str:
    """One parsed override -> an Optuna distribution, or its value as a string when it is fixed."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(v, float) for v in (start, stop, step)):
            return FloatDistribution(float(start), float(stop), step=float(step))
        return IntDistribution(int(start), int(stop) - 1, step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise TransferlabError(
        f"Search-space entry {override.input_line!r} is a {override.value_type.name} sweep; use interval(a, b), "
        "tag(log, interval(a, b)), int(interval(a, b)), range(a, b) or choice(a, b, ...)."
    )


def parse_space(entries: Iterable[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """`key=grammar` strings -> (distributions to sample, fixed values), later entries winning."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    try:
        parsed = OverridesParser.create().parse_overrides(list(entries))
    except Exception as exc:  # Hydra's grammar errors are long; keep the first line
        raise TransferlabError(f"Cannot parse the search space: {str(exc).splitlines()[0]}") from None
    for override in parsed:
        key = override.get_key_element()
        value = to_distribution(override)
        distributions.pop(key, None)
        fixed.pop(key, None)
        if isinstance(value, BaseDistribution):
            distributions[key] = value
        else:
            fixed[key] = value
    return distributions, fixed


def declared_space(cfg: DictConfig) -> list[str]:
    """`key=grammar` entries of every top-level node's `search_space` (strategy, regularizer, ...)."""
    entries = []
    for name in cfg:
        node = cfg.get(name)
        if isinstance(node, DictConfig) and name != "hydra" and SEARCH_SPACE_KEY in node:
            space = node[SEARCH_SPACE_KEY] or {}
            entries += [f"{key}={value}" for key, value in _items(space)]
    return entries


def _items(space: Mapping[str, Any] | DictConfig) -> list[tuple[str, Any]]:
    if isinstance(space, DictConfig):
        space = OmegaConf.to_container(space, resolve=True)
    return [(str(k), v) for k, v in space.items() if v is not None]


def format_value(value: Any) -> str:
    """A sampled value as an override string Hydra parses back to the same value."""
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
