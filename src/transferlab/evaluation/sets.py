"""The extra test sets of a run (`eval_sets`), built from their specs and checked before training.

A spec is one of:
- `shift: NAME` (+ its parameters, `seed`): the run's own test split, shifted (see `shifts.SHIFTS`);
- `folder: PATH`: a folder of class folders, PATH/<class>/* (e.g. an ImageNet-R style copy);
- `dataset: NAME` (+ `overrides: [...]`, `split: test`): a dataset config, as `dataset=NAME` would give.

Labels follow the run's classes by name; a set with a class the run does not know is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import Dataset

from transferlab.core.errors import TransferlabError, instantiate
from transferlab.data.folders import read_file, scan_class_folders
from transferlab.data.loaders import ImageDataset
from transferlab.data.sources import StreamingSource
from transferlab.evaluation.shifts import Shift, ShiftedDataset

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED = ("ood_mean",)
KINDS = ("shift", "folder", "dataset")


@dataclass
class EvalSet:
    """A named extra test set: a map-style dataset labelled in the run's classes, and what it is."""

    name: str
    dataset: Dataset
    description: dict[str, Any]


def build_eval_sets(cfg: DictConfig, datamodule: Any) -> list[EvalSet]:
    """Every set of `cfg.eval_sets`, in the order given; bad names, specs or classes raise one line."""
    specs = OmegaConf.to_container(cfg.get("eval_sets") or OmegaConf.create({}), resolve=True)
    sets = []
    for name, spec in (specs or {}).items():
        where = f"eval_sets.{name}"
        if not NAME.match(str(name)) or name in RESERVED:
            raise TransferlabError(
                f"{where}: the set name {name!r} is not allowed (letters, digits, '_', '.', '-'; not "
                f"{', '.join(RESERVED)}); rename it."
            )
        if spec is None:  # removed with eval_sets.NAME=null
            continue
        kinds = [k for k in KINDS if k in (spec or {})]
        if len(kinds) != 1:
            raise TransferlabError(
                f"{where} must name exactly one of {', '.join(f'{k}:' for k in KINDS)} (got {sorted(spec or {})}); "
                f"e.g. {where}={{shift:rotation}}."
            )
        build = {"shift": _shifted, "folder": _folder, "dataset": _dataset}[kinds[0]]
        dataset, description = build(cfg, datamodule, dict(spec), where)
        if len(dataset) == 0:
            raise TransferlabError(f"{where} has no images; point it at a folder with images.")
        sets.append(EvalSet(str(name), dataset, {"kind": kinds[0], "samples": len(dataset), **description}))
    return sets


def _shifted(cfg, datamodule, spec: dict[str, Any], where: str) -> tuple[Dataset, dict[str, Any]]:
    shift = Shift.of(spec, where)
    if not hasattr(datamodule, "splits") or isinstance(getattr(datamodule, "source", None), StreamingSource):
        raise TransferlabError(
            f"{where}: shifts need a dataset whose test images can be read one by one; dataset="
            f"{getattr(datamodule, 'name', '?')} streams them. Use eval_sets=none, or an image folder or HF dataset."
        )
    datamodule.setup()
    dataset = ShiftedDataset(
        datamodule.splits["test"],
        datamodule.read,
        shift,
        datamodule.image_size,
        datamodule.mean,
        datamodule.std,
    )
    digest = hashlib.sha256(f"{datamodule.split_hash('test')}|{shift.fingerprint()}".encode()).hexdigest()
    return dataset, {"of": "test", **shift.describe(), "sha256": digest}


def _mapped(
    found: dict[str, list[Any]], class_names: list[str], where: str, source: str
) -> list[tuple[Any, int]]:
    """(key, run label) samples of `found` (class -> keys); classes the run does not know are refused."""
    index = {c: i for i, c in enumerate(class_names)}
    unknown = [c for c in found if c not in index]
    if unknown:
        raise TransferlabError(
            f"{where}: classes {unknown} in {source} are not classes of this run ({class_names}); remove them "
            "from that set, or evaluate a run trained on them."
        )
    return [(k, index[c]) for c in class_names for k in found.get(c, [])]


def _folder(cfg, datamodule, spec: dict[str, Any], where: str) -> tuple[Dataset, dict[str, Any]]:
    root = Path(str(spec["folder"])).expanduser()
    if not root.is_dir():
        raise TransferlabError(
            f"{where}.folder={root} does not exist; point it at a folder of class folders."
        )
    samples = _mapped(scan_class_folders(root.resolve()), datamodule.class_names, where, str(root))
    digest = hashlib.sha256()
    for key, label in samples:  # names, labels and sizes: cheap, and it changes when the set does
        digest.update(f"{os.path.relpath(key, root.resolve())}|{label}|{os.stat(key).st_size}\n".encode())
    dataset = ImageDataset(samples, datamodule.transform("test", augment=False), read_file)
    return dataset, {"folder": str(root.resolve()), "sha256": digest.hexdigest()}


def _dataset(cfg, datamodule, spec: dict[str, Any], where: str) -> tuple[Dataset, dict[str, Any]]:
    from transferlab.core.config import compose_dataset

    name, split = str(spec["dataset"]), str(spec.get("split", "test"))
    overrides = [str(o) for o in spec.get("overrides") or []]
    try:
        node = compose_dataset(cfg, name, [*overrides, f"dataset.image_size={datamodule.image_size}"])
    except Exception as exc:  # an unknown dataset name or key: Hydra's words
        raise TransferlabError(f"{where}.dataset={name}: {str(exc).splitlines()[0]}") from None
    with open_dict(node):
        node.pop("search_space", None)
    other = instantiate(node, data_config={"mean": datamodule.mean, "std": datamodule.std}, _convert_="all")
    other.setup()
    if split not in other.splits:
        raise TransferlabError(
            f"{where}.split={split} is not a split of dataset {name}; use one of {list(other.splits)}."
        )
    found: dict[str, list[Any]] = {}
    for key, label in other.splits[split]:
        found.setdefault(other.class_names[label], []).append(key)
    samples = _mapped(found, datamodule.class_names, where, other.where(split))
    dataset = ImageDataset(samples, datamodule.transform("test", augment=False), other.read)
    return dataset, {
        "dataset": name,
        "overrides": overrides,
        "split": split,
        "sha256": other.split_hash(split),
    }
