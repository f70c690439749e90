"""Transfer strategies: one small class each; see `TransferStrategy` for the hooks."""

from omegaconf import DictConfig

from transferlab.core.config import without_search_space
from transferlab.core.errors import instantiate
from transferlab.strategies.base import TransferStrategy
from transferlab.strategies.lora import LoRA
from transferlab.strategies.multitask import MultiTask
from transferlab.strategies.scheduled import LPFT, GradualUnfreeze
from transferlab.strategies.simple import KNN, BitFit, Full, LinearProbe, Partial, Scratch


def build_strategy(conf: DictConfig) -> TransferStrategy:
    """The strategy of a `strategy` config node (its `search_space` is for the sweeper only)."""
    return instantiate(
        without_search_space(conf), kind=TransferStrategy, example="transferlab.strategies.Full"
    )


__all__ = [
    "KNN",
    "LPFT",
    "BitFit",
    "Full",
    "GradualUnfreeze",
    "LinearProbe",
    "LoRA",
    "MultiTask",
    "Partial",
    "Scratch",
    "TransferStrategy",
    "build_strategy",
]
