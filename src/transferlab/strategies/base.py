"""`TransferStrategy`: decides what trains, with which learning rates, and when."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from torch import nn

from transferlab.backbones import Backbone
from transferlab.core.errors import TransferlabError
from transferlab.core.targets import packaged_name

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


class TransferStrategy:
    """Base class: everything trains. Subclasses override one hook each.

    - `trainable_stages(n, epoch)`: indices of backbone stages that train at `epoch`.
    - `trainable_parameters(backbone, epoch)`: the parameter objects that train (default: those stages).
    - `lr_scales(n)`: learning-rate multiplier per stage (baked into each param group's `lr`).
    - `prepare(backbone)`: change the backbone once before training (e.g. inject adapters).

    `gated=True` strategies change the trainable set during training: all parameters are then in the
    optimizer from step 0 and the frozen ones are gated (their gradients dropped), so schedulers,
    checkpoint resume and DDP keep working.
    """

    gated = False
    random_init = False
    joint_source = False  # trains on the source task too (hard parameter sharing)
    caches_features = False  # the backbone is fixed: its features can be computed once and cached
    head_solver: str | None = "sgd"  # how the head is fitted: sgd (the training loop), lbfgs or knn

    def __init__(
        self,
        name: str | None = None,
        train_bn: bool = False,
        backbone_lr_mult: Annotated[float, Field(gt=0.0)] = 1.0,
        head_lr_mult: Annotated[float, Field(gt=0.0)] = 1.0,
    ):
        # The name is the config's (`strategy.name`, what `strategy=<name>` picks and results record);
        # built without one, the class takes the name its packaged config gives it.
        self._name = str(name) if name is not None else packaged_name(type(self), "strategy")
        self.train_bn = bool(train_bn)
        self.backbone_lr_mult = float(backbone_lr_mult)
        self.head_lr_mult = float(head_lr_mult)

    @property
    def name(self) -> str:
        """The strategy's name, as its config gives it (`strategy.name`)."""
        return self._name

    # ------------------------------------------------------------------ hooks
    def prepare(self, backbone: Backbone) -> None:
        """Modify the backbone once before training; default: nothing."""

    def trainable_stages(self, n_stages: int, epoch: int) -> set[int]:
        return set(range(n_stages))

    def trainable_parameters(self, backbone: Backbone, epoch: int) -> set[int]:
        """ids of the backbone parameters that train at `epoch`."""
        stages = backbone.stage_parameters()
        chosen = self.trainable_stages(len(stages), epoch)
        ids = {id(p) for i in chosen for p in stages[i]}
        staged = {id(p) for ps in stages for p in ps}
        # Parameters outside every stage (rare) follow the last stage.
        if len(stages) - 1 in chosen:
            ids |= {id(p) for p in backbone.parameters() if id(p) not in staged}
        return ids

    def lr_scales(self, n_stages: int) -> list[float]:
        return [self.backbone_lr_mult] * n_stages

    # --------------------------------------------------------------- records
    def config(self) -> dict[str, Any]:
        """The strategy's settings, as recorded in results and checkpoints."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise TransferlabError(
                f"The checkpoint was written by strategy '{state.get('name')}', this run uses '{self.name}'; "
                f"resume with strategy={state.get('name')} or start a new run."
            )

    def check(self, backbone: Backbone) -> None:
        """Validate settings against the backbone; raise `TransferlabError` with the fix."""

    def plain_model(self, backbone: Backbone) -> nn.Module:
        """The trained backbone as a plain timm/torch model (subclasses: e.g. adapters merged)."""
        return backbone.model

    def export_model(self, backbone: Backbone) -> nn.Module:
        """The plain model to export, checked to reproduce the trained backbone's features on a batch
        (a `TransferlabError` otherwise: nothing wrong is exported silently)."""
        from transferlab.strategies.export import verify_export

        return verify_export(self.name, backbone, self.plain_model(backbone))
