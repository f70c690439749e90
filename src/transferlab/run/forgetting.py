"""How much transfer cost the source task: the source head on the source test split, before and after.

When the backbone came from a transferlab run, its export holds the source head (`head.safetensors`)
and the source dataset's config (`backbone.json`), so any later run can score the backbone it starts
from (`source/acc_before`) and the one it ends with (`source/acc_after`) on the source test split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn

from transferlab.core.errors import instantiate
from transferlab.core.targets import check_data_node, packaged_targets
from transferlab.evaluation.scoring import accuracy

log = logging.getLogger(__name__)


class SourceTask:
    """The source head and test split of the run a backbone was exported from, or None when unknown."""

    def __init__(self, head: nn.Module, loader, num_classes: int, name: str):
        self.head, self.loader, self.num_classes, self.name = head, loader, num_classes, name

    @classmethod
    def of(cls, weights: dict[str, Any], backbone, image_size: int) -> SourceTask | None:
        meta = weights.get("from_run") or {}
        if not (meta.get("head_file") and meta.get("dataset_config") and weights.get("path")):
            return None
        head_file, dataset = Path(weights["path"]).with_name(meta["head_file"]), meta["dataset_config"]
        if not head_file.is_file():
            return None
        if int(dataset.get("image_size", image_size)) != image_size:
            log.info(
                "Forgetting not measured: the source task used %s px images, this run %d px.",
                dataset.get("image_size"),
                image_size,
            )
            return None
        state = load_file(str(head_file))
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        head.load_state_dict(state)
        # backbone.json is a data file beside the weights: it may name only our own dataset classes.
        check_data_node(
            dataset, packaged_targets("dataset"), where=str(Path(weights["path"]).with_name("backbone.json"))
        )
        datamodule = instantiate(OmegaConf.create(dataset), data_config=backbone.data_config, _convert_="all")
        datamodule.setup("test")
        return cls(
            head,
            datamodule.eval_dataloader("test"),
            state["weight"].shape[0],
            meta.get("source_dataset", "source"),
        )

    def score(self, backbone: nn.Module) -> float:
        self.head.to(next(backbone.parameters()).device)
        return accuracy(backbone, self.head, self.loader, self.num_classes)
