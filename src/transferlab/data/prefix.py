"""The frozen prefix of a partially fine-tuned backbone, computed once.

When the first stages are frozen (BatchNorm in eval mode) and augmentation is off, their output for a
given image never changes. `FrozenPrefix` finds the leading top-level modules of the model whose
parameters are all frozen, computes their output (the activation at the frozen boundary) for every
image once (cached on disk like frozen features), and during training lets those modules pass their
input through, so the model runs only its trainable suffix on the cached activations. It first checks,
on a real batch, that this gives the same features as the whole network (a model whose forward is not a
plain sequence of its top-level modules fails the check and is trained without the cache).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised by a hook to end a forward pass at the frozen boundary."""


class _PassThrough:
    """A module's `forward` while its output is served from the cache: the input, unchanged."""

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x


class FrozenPrefix:
    def __init__(self, model: nn.Module, frozen: set[int]):
        self.model = model
        self.names: list[str] = []
        for name, child in model.named_children():
            params = list(child.parameters())
            if params and not all(id(p) in frozen for p in params):
                break
            self.names.append(name)
        while self.names and not list(model.get_submodule(self.names[-1]).parameters()):
            self.names.pop()  # end at the last frozen module with weights (parameter-free ones follow it)

    @property
    def boundary(self) -> str | None:
        return self.names[-1] if self.names else None

    @torch.no_grad()
    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The output of the last frozen module for `x` (the rest of the network is not run)."""
        captured: list[torch.Tensor] = []

        def stop(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            captured.append(output)
            raise _Stop

        handle = self.model.get_submodule(self.boundary).register_forward_hook(stop)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured[0]

    def skip(self) -> None:
        """From now on the prefix modules pass the (cached) activations through."""
        for name in self.names:
            self.model.get_submodule(name).forward = _PassThrough()

    def restore(self) -> None:
        for name in self.names:
            module = self.model.get_submodule(name)
            if isinstance(module.__dict__.get("forward"), _PassThrough):
                del module.forward

    @torch.no_grad()
    def agrees(self, x: torch.Tensor) -> bool:
        """Whether running the suffix on the prefix's activations gives the whole network's features."""
        was_training = self.model.training
        self.model.eval()
        try:
            whole = self.model(x)
            boundary = self.activations(x)
            self.skip()
            try:
                split = self.model(boundary)
            finally:
                self.restore()
        except Exception:
            return False
        finally:
            self.model.train(was_training)
        return whole.shape == split.shape and torch.allclose(whole, split, atol=1e-5, rtol=1e-4)
