"""Transfer strategies: one small class each; see `TransferStrategy` for the hooks."""

from transferlab.strategies.base import TransferStrategy
from transferlab.strategies.lora import LoRA
from transferlab.strategies.scheduled import LPFT, GradualUnfreeze
from transferlab.strategies.simple import BitFit, Full, LinearProbe, Partial, Scratch

__all__ = [
    "LPFT",
    "BitFit",
    "Full",
    "GradualUnfreeze",
    "LinearProbe",
    "LoRA",
    "Partial",
    "Scratch",
    "TransferStrategy",
]
