"""Print a backbone's ordered stages, so you can choose `strategy.trainable_stages`.

python -m transferlab.stages backbone=resnet18
python -m transferlab.stages backbone.name=convnext_atto dataset.image_size=64
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from transferlab.core.config import compose_train
from transferlab.core.errors import TransferlabError, asked_for_help, instantiate


def stage_table(overrides: list[str]) -> Table:
    """Index, name, modules, parameters and each stage's share of parameters and FLOPs (one image at
    `dataset.image_size`) of the configured backbone. Imports timm and torch, not Lightning."""
    from transferlab.backbones.factory import STAGE_SOURCES
    from transferlab.backbones.profile import stage_shares

    cfg = compose_train(overrides)
    backbone = instantiate(cfg.backbone, pretrained=False, _convert_="all")
    stages = stage_shares(backbone, backbone.image_size)
    source = STAGE_SOURCES.get(backbone.stage_source, backbone.stage_source)
    table = Table(title=f"Stages of {backbone.name} (stem first; the head is not a stage; from {source})")
    for column in ("index", "stage", "modules", "params", "% params", "% FLOPs"):
        table.add_column(column, justify="left" if column in ("stage", "modules") else "right")
    for stage in stages:
        modules = stage["modules"]
        shown = ", ".join(modules[:6]) + (f", ... ({len(modules)})" if len(modules) > 6 else "")
        table.add_row(
            str(stage["index"]),
            stage["name"],
            shown,
            f"{stage['params']:,}",
            f"{100 * stage['param_share']:.1f}",
            f"{100 * stage['flop_share']:.1f}",
        )
    n, total = len(stages), sum(s["flops"] for s in stages)
    table.caption = (
        f"FLOPs of one {backbone.image_size}px image: {total / 1e6:,.1f} M. strategy=partial "
        f"strategy.trainable_stages=k trains the last k of these {n} stages and the head; "
        "strategy.trainable_fraction=f the fewest last stages holding at least that share of the parameters."
    )
    return table


def main(argv: list[str] | None = None) -> None:
    """Console script `transferlab-stages`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if asked_for_help(
        argv, "usage: transferlab-stages [Hydra overrides, e.g. backbone=resnet18]\n\n" + __doc__
    ):
        return
    try:
        Console(width=140).print(stage_table(argv))
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
