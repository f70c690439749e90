"""Soft parameter sharing and regularized fine-tuning: a term added to the training loss.

Each regularizer keeps what it compares against (starting weights, the starting network, channel
attention) as registered buffers or submodules of the `TransferModule`, so checkpoints carry them and a
resumed run restores them instead of recomputing them from a source that may have changed since. Every
process of a DDP run holds the same references (DDP broadcasts buffers from rank 0) and computes its
term on its own batch.

    regularizer=none | l2_sp | delta | bss        (conf/regularizer/*.yaml)
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from transferlab.core.errors import TransferlabError
from transferlab.core.targets import packaged_name

TransferModule = Any  # transferlab.module.TransferModule: the penalty reads its backbone and head
log = logging.getLogger(__name__)


class Regularizer(nn.Module):
    """Base class. `attach` records references when the module is built (a resumed run's checkpoint then
    overwrites them); `prepare` runs once before the first step of a fresh run; `penalty` is the term.
    Settings are typed `__init__` arguments (`core.settings`), each passed on to this one with `name`."""

    def __init__(self, name: str | None = None):
        super().__init__()
        # The config's name (`regularizer.name`); built without one, the packaged config's.
        self._name = str(name) if name is not None else packaged_name(type(self), "regularizer")

    @property
    def name(self) -> str:
        return self._name

    def attach(self, module: TransferModule) -> None:
        """Record the references from the module as it starts (registered, so checkpoints carry them)."""

    def prepare(self, module: TransferModule, batches: list[Any]) -> None:
        """One-off work on a few training batches before the first step (DELTA's channel attention)."""

    def penalty(self, module: TransferModule, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "training"}

    # What the penalty reads each step, besides the model (declared, so the run need not guess):
    # "features" (the pooled features), "feature_maps" (stage outputs), "inputs" (the images),
    # "backbone_weights", "reference_weights" (the starting weights), "reference_network" (a frozen copy).
    needs: frozenset[str] = frozenset({"inputs", "backbone_weights"})

    @property
    def works_on_cached_prefix(self) -> bool:
        """Whether training may skip a frozen prefix (its activations cached): the penalty reads only what
        comes after it."""
        return self.needs <= {"features", "logits"}

    def preparation_batches(self) -> int:
        """How many training batches `prepare` wants (0: none, or already prepared)."""
        return 0

    def first_batches(self, datamodule: Any) -> list[Any]:
        """The training batches `prepare` works on (evaluation transform, fixed order), drawn without
        touching the run's random stream or its loaders."""
        wanted = self.preparation_batches()
        if not wanted:
            return []
        with torch.random.fork_rng(devices=[]):
            return list(itertools.islice(iter(datamodule.eval_dataloader("train")), wanted))

    def check(self, module: TransferModule) -> None:
        """Every regularizer acts through backbone weights that train: refused when none do."""
        summary = module.strategy_summary()
        if summary["trainable_backbone_params"] == 0 and not module.strategy.gated:
            raise TransferlabError(
                f"regularizer={self.name} regularizes backbone weights, but strategy={module.strategy.name} "
                "trains none of them (nothing to regularize); use strategy=full, partial, bitfit, lp_ft or "
                "multitask, or regularizer=none."
            )


class L2SP(Regularizer):
    """L2-SP (Li, Grandvalet & Davoine, ICML 2018, eq. 3):

        Omega(w) = alpha/2 * ||w_S - w_S^0||^2  +  beta/2 * ||w_head||^2

    pulling the shared (backbone) weights w_S toward their starting point w_S^0, with plain weight decay
    on the new head. Only backbone parameters that train are pulled."""

    def __init__(
        self,
        alpha: Annotated[float, Field(ge=0.0)] = 0.1,
        beta: Annotated[float, Field(ge=0.0)] = 0.01,
        name: str | None = None,
    ):
        super().__init__(name)
        self.alpha, self.beta = float(alpha), float(beta)
        self._names: list[str] = []

    def attach(self, module: TransferModule) -> None:
        for name, p in module.backbone.named_parameters():
            self._names.append(name)
            self.register_buffer(f"w0_{len(self._names) - 1}", p.detach().clone())

    needs = frozenset({"backbone_weights", "reference_weights"})

    def penalty(self, module: TransferModule, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        params = dict(module.backbone.named_parameters())
        starting = sum(
            ((params[n] - getattr(self, f"w0_{i}")) ** 2).sum()
            for i, n in enumerate(self._names)
            if params[n].requires_grad
        )
        head = sum((p**2).sum() for p in module.head.parameters() if p.ndim > 1)
        return 0.5 * self.alpha * starting + 0.5 * self.beta * head


class DELTA(Regularizer):
    """DELTA (Li et al., ICLR 2019, eq. 4-5), as in TLlib's `AttentionBehavioralRegularization`:

        Omega(w, x) = alpha/2 * mean_x sum_j sum_c W_jc * ||FM_jc(w, x) - FM_jc(w^0, x)||^2 * C_j / L_j

    over the feature maps FM_j at the end of each backbone stage (C_j channels of L_j positions), against
    the starting network w^0 (a frozen copy, held once), plus beta/2 * ||w_head||^2. The channel attention
    W_j = softmax(z(dloss_j) / 5) comes from how much the loss of a linear head fitted on the starting
    features grows when each channel is masked, on `attention_batches` training batches; with
    `attention: false` all channels weigh 1/C_j (plain feature-map regularization). Unlike TLlib, which sums
    over the batch, the term is averaged over the batch, so alpha does not depend on the batch size."""

    def __init__(
        self,
        alpha: Annotated[float, Field(ge=0.0)] = 0.1,
        beta: Annotated[float, Field(ge=0.0)] = 0.01,
        attention: bool = True,
        attention_batches: Annotated[int, Field(ge=0)] = 2,
        head_steps: Annotated[int, Field(ge=1)] = 100,
        name: str | None = None,
    ):
        super().__init__(name)
        self.alpha, self.beta = float(alpha), float(beta)
        self.attention = bool(attention)
        self.attention_batches = int(attention_batches)
        self.head_steps = int(head_steps)
        self._maps: dict[str, dict[int, torch.Tensor]] = {"now": {}, "start": {}}

    def attach(self, module: TransferModule) -> None:
        self.start = copy.deepcopy(module.backbone.model).eval().requires_grad_(False)
        self._layers = _stage_ends(module.backbone)
        for net, key in ((module.backbone.model, "now"), (self.start, "start")):
            for i, name in enumerate(self._layers):
                net.get_submodule(name).register_forward_hook(functools.partial(self._keep, key, i))
        for i, name in enumerate(self._layers):
            channels = _channels(self.start.get_submodule(name))
            self.register_buffer(f"attention_{i}", torch.full((channels,), 1.0 / channels))
        self.register_buffer("ready", torch.tensor(not self.attention))

    def _keep(self, key: str, index: int, module: nn.Module, inputs: Any, output: Any) -> None:
        self._maps[key][index] = output[0] if isinstance(output, tuple) else output

    def train(self, mode: bool = True) -> DELTA:
        super().train(mode)
        if hasattr(self, "start"):
            self.start.eval()  # the starting network never updates its BatchNorm statistics
        return self

    def preparation_batches(self) -> int:
        return 0 if bool(self.ready) else self.attention_batches

    @torch.no_grad()
    def prepare(self, module: TransferModule, batches: list[Any]) -> None:
        if bool(self.ready) or not batches:
            return
        with torch.random.fork_rng(devices=[]):  # fitting the probe head must not shift the run's stream
            self._compute_attention(module, batches)
        self.ready.fill_(True)

    def _compute_attention(self, module: TransferModule, batches: list[Any]) -> None:
        xs = [b[0].to(module.device) for b in batches]
        ys = [b[1].to(module.device) for b in batches]
        features = [self.start(x) for x in xs]
        head = nn.Linear(features[0].shape[1], module.num_classes).to(module.device)
        with torch.enable_grad():
            optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
            for _ in range(self.head_steps):
                optimizer.zero_grad()
                loss = sum(nn.functional.cross_entropy(head(f), y) for f, y in zip(features, ys, strict=True))
                loss.backward()
                optimizer.step()
        for i, name in enumerate(self._layers):
            layer = self.start.get_submodule(name)
            channels = getattr(self, f"attention_{i}").numel()
            increase = torch.zeros(channels, device=module.device)
            for x, y in zip(xs, ys, strict=True):
                base = nn.functional.cross_entropy(head(self.start(x)), y)
                for c in range(channels):
                    handle = layer.register_forward_hook(_mask(c))
                    increase[c] += nn.functional.cross_entropy(head(self.start(x)), y) - base
                    handle.remove()
            z = (increase - increase.mean()) / increase.std().clamp_min(1e-12)
            getattr(self, f"attention_{i}").copy_(torch.softmax(z / 5.0, dim=0))
        log.info(
            "DELTA: channel attention over %d stage outputs from %d batches.", len(self._layers), len(xs)
        )

    needs = frozenset({"inputs", "feature_maps", "reference_network"})

    def penalty(self, module: TransferModule, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.start(x)  # fills the starting network's feature maps for this batch
        total = features.new_zeros(())
        for i in range(len(self._layers)):
            now, start = _as_channels(self._maps["now"][i]), _as_channels(self._maps["start"][i])
            positions = now.shape[2]
            distance = ((now - start.detach()) ** 2).sum(dim=2)  # (batch, channels)
            weights = getattr(self, f"attention_{i}") * now.shape[1]
            total = total + (weights * distance).sum() / (positions * now.shape[0])
        head = sum((p**2).sum() for p in module.head.parameters() if p.ndim > 1)
        return 0.5 * self.alpha * total + 0.5 * self.beta * head


class BSS(Regularizer):
    """Batch Spectral Shrinkage (Chen et al., NeurIPS 2019, eq. 5), as TLlib's `BatchSpectralShrinkage`:

        L_bss(F) = eta * sum_{i=1..k} sigma_{-i}^2

    the k smallest singular values of the batch's feature matrix F (batch x features)."""

    def __init__(
        self,
        eta: Annotated[float, Field(ge=0.0)] = 0.001,
        k: Annotated[int, Field(ge=1)] = 1,
        name: str | None = None,
    ):
        super().__init__(name)
        self.eta, self.k = float(eta), int(k)

    needs = frozenset({"features"})

    def penalty(self, module: TransferModule, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        singular = torch.linalg.svdvals(features.float())  # descending
        k = min(self.k, singular.numel())
        return self.eta * (singular[-k:] ** 2).sum()


def _mask(channel: int):
    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        if output.ndim == 3:  # tokens: (batch, positions, channels)
            output[..., channel] = 0
        else:
            output[:, channel] = 0
        return output

    return hook


def _as_channels(fm: torch.Tensor) -> torch.Tensor:
    """A feature map as (batch, channels, positions): (B, C, H, W) conv maps, (B, N, C) tokens, (B, C)."""
    if fm.ndim == 4:
        return fm.flatten(2)
    if fm.ndim == 3:
        return fm.transpose(1, 2)
    return fm.reshape(fm.shape[0], fm.shape[1], 1)


def _stage_ends(backbone) -> list[str]:
    """The last module (holding parameters) of each backbone stage: where its feature map comes out."""
    ends = []
    for stage in backbone.stages:
        owner = stage.param_names[-1].rsplit(".", 1)[0]
        if owner and owner not in ends:
            ends.append(owner)
    return ends


def _channels(layer: nn.Module) -> int:
    """Output channels of a layer from its own attributes (no forward pass needed)."""
    for attribute in ("out_channels", "out_features", "num_features"):
        if isinstance(getattr(layer, attribute, None), int):
            return getattr(layer, attribute)
    shape = getattr(layer, "normalized_shape", None)
    if shape:
        return int(shape[-1])
    return int(next(layer.parameters()).shape[0])
