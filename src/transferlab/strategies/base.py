"""`TransferStrategy`: decides what trains, with which learning rates, and when."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field
from torch import nn

from transferlab.backbones import Backbone
from transferlab.core.errors import TransferlabError
from transferlab.core.targets import packaged_name
from transferlab.strategies.context import RunContext

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

    Everything else a strategy does (its initial weights, module, data, fit, export) is a run hook below,
    called by `run/job.py` in order; a strategy overrides the ones it changes.
    """

    gated = False

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

    def summary(self, backbone: Backbone, frozen: set[int]) -> dict[str, Any]:
        """Per-stage trainable parameters, frozen stages and the BatchNorm policy, given the ids of the
        frozen backbone parameters (recorded as `strategy_details`)."""
        stages = []
        for stage, params in zip(backbone.stages, backbone.stage_parameters(), strict=True):
            trainable = sum(p.numel() for p in params if id(p) not in frozen)
            stages.append(
                {"name": stage.name, "params": sum(p.numel() for p in params), "trainable": trainable}
            )
        frozen_params = sum(p.numel() for p in backbone.parameters() if id(p) in frozen)
        return {
            "name": self.name,
            "config": self.config(),
            "stages": stages,
            "frozen_stages": [s["name"] for s in stages if s["trainable"] == 0],
            "frozen_params": frozen_params,
            "trainable_backbone_params": sum(p.numel() for p in backbone.parameters()) - frozen_params,
            "bn_policy": _bn_policy(frozen_params, self.train_bn),
            "lr_scales": self.lr_scales(len(stages)),
            "gated": self.gated,
        }

    # -------------------------------------------------------------- optimizer
    def param_groups(self, backbone: Backbone, head: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """The optimizer's groups: per stage (scaled by `lr_scales`, timm's decay rules), then the head.
        Static strategies list what trains; gated ones list everything from step 0."""
        from transferlab.strategies.param_groups import build_param_groups

        include = (lambda p: True) if self.gated else (lambda p: p.requires_grad)
        return build_param_groups(backbone, head, self, lr, weight_decay, include)

    # ------------------------------------------------------ run hooks (run/job)
    # The job calls these in order; each default is what a plain fine-tuning run does, so a strategy
    # overrides only what it does differently. Whatever a hook did goes into `ctx.record`.
    def initial_weights(self, requested: Any) -> Any:
        """The `backbone.pretrained` the run starts from (default: the one asked for)."""
        return requested

    def build_module(self, ctx: RunContext, backbone: Backbone, **kwargs: Any) -> Any:
        """The module that trains (default: a `TransferModule` with one head). The job reads what a
        `TransferModule` has (parameter counts, summary, fit metrics, confusion, `param_group_record`), so
        return one or a subclass (as `MultiTask` does); its `training_step` returns `loss` and `task_loss`
        (what the divergence guard watches)."""
        from transferlab.module import TransferModule

        return TransferModule(backbone, self, **kwargs)

    def prepare_data(self, ctx: RunContext, module: Any) -> Any:
        """The data module the fit and the test see (default: the target's own)."""
        return ctx.datamodule

    def callbacks(self) -> list[Any]:
        """Lightning callbacks this strategy adds to the trainer (default: none)."""
        return []

    def fit(self, ctx: RunContext, trainer: Any, module: Any, data: Any, ckpt_path: str | None) -> None:
        """Fit the module (default: Lightning's training loop, continuing from `ckpt_path`)."""
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)

    def after_test(self, module: Any) -> None:
        """Undo what `prepare_data` changed in the model, before extra test sets and the export."""

    def extra_metrics(self, module: Any) -> dict[str, float]:
        """Metrics of the strategy's own, after the test (default: none)."""
        return {}

    def export(self, module: Any, out: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Write the head (`head.safetensors`) and the plain backbone; returns the export's record."""
        from transferlab.backbones.weights import export_backbone, export_head

        export_head(module.head, out)
        return export_backbone(self.export_model(module.backbone), out, meta)


def _bn_policy(frozen_params: int, train_bn: bool) -> str:
    if frozen_params == 0:
        return "nothing frozen: every BatchNorm layer trains"
    if train_bn:
        return "frozen BatchNorm layers train (running statistics updated)"
    return "frozen BatchNorm layers in eval mode (running statistics untouched)"
