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
    """Index, name, modules and parameter count of each stage of the configured backbone."""
    cfg = compose_train(overrides)
    backbone = instantiate(cfg.backbone, pretrained=False, _convert_="all")
    table = Table(title=f"Stages of {backbone.name} (stem first; the head is not a stage)")
    for column in ("index", "stage", "modules", "params"):
        table.add_column(column, justify="right" if column in ("index", "params") else "left")
    for stage in backbone.describe_stages():
        modules = stage["modules"]
        shown = ", ".join(modules[:6]) + (f", ... ({len(modules)})" if len(modules) > 6 else "")
        table.add_row(str(stage["index"]), stage["name"], shown, f"{stage['params']:,}")
    n = len(backbone.stages)
    table.caption = (
        f"strategy=partial strategy.trainable_stages=k trains the last k of these {n} stages and the head."
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
