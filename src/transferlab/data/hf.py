"""Hugging Face `datasets` as a data source (`dataset=hf`): a hub name, a local `imagefolder` or parquet
directory, or a `save_to_disk` folder. Images stay in memory-mapped Arrow files (memory stays flat);
class subsets, `samples_per_class`, the seeded validation split and augmentation are the image-folder
module's own code."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferlab.core.errors import TransferlabError, did_you_mean
from transferlab.data.image_folder import ImageFolderDataModule, digest_rows

log = logging.getLogger(__name__)
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}


class HFDataModule(ImageFolderDataModule):
    """Images and labels from a Hugging Face dataset: `path` is a hub name or a local directory;
    `image_key`/`label_key` name the columns (a ClassLabel column gives the class names)."""

    def __init__(
        self,
        path: str,
        image_key: str = "image",
        label_key: str = "label",
        config_name: str | None = None,
        hf_cache_dir: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**{**kwargs, "root": str(path)})
        self.path = str(path)
        self.image_key, self.label_key = image_key, label_key
        self.config_name = config_name
        self.hf_cache_dir = hf_cache_dir
        self.root = Path(self.path).expanduser() if Path(self.path).expanduser().exists() else Path(self.path)
        self._data: dict[str, Any] = {}
        self._files: dict[str, list[str] | None] = {}

    def prepare_root(self) -> None:
        import datasets

        local = Path(self.path).expanduser()
        try:
            if (local / "dataset_dict.json").is_file():
                loaded = datasets.load_from_disk(str(local))
            elif local.is_dir():
                loaded = datasets.load_dataset(**_local_source(local), cache_dir=self.hf_cache_dir)
            else:
                loaded = datasets.load_dataset(self.path, self.config_name, cache_dir=self.hf_cache_dir)
        except Exception as exc:
            raise TransferlabError(
                f"dataset.path={self.path}: cannot load it as a Hugging Face dataset ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); give a hub name (online) or a local "
                "imagefolder / parquet / save_to_disk directory."
            ) from None
        for ours, names in SPLIT_NAMES.items():
            found = next((n for n in names if n in loaded), None)
            if found is not None:
                self._data[ours] = loaded[found]
        for split, data in self._data.items():
            for key in (self.image_key, self.label_key):
                if key not in data.column_names:
                    raise TransferlabError(
                        f"dataset.{'image_key' if key == self.image_key else 'label_key'}={key}: no such column in "
                        f"the {split} split of {self.path}.{did_you_mean(key, data.column_names)} Columns: "
                        f"{data.column_names}."
                    )

    def scan(self, split: str, required: bool) -> dict[str, list[Any]] | None:
        data = self._data.get(split)
        if data is None:
            if required:
                raise TransferlabError(
                    f"dataset.path={self.path} has no {split} split (found {list(self._data)})."
                )
            return None
        name_of = self._class_name(data)
        paths = self._paths(data)
        self._files[split] = paths
        rows: dict[str, list[tuple[str, int]]] = {}
        for row, label in enumerate(data[self.label_key]):
            rows.setdefault(name_of(label), []).append((paths[row] if paths else f"{row:012d}", row))
        # Ordered as the image-folder module orders files, so the same files give the same split.
        return {c: [(split, row) for _, row in sorted(rows[c])] for c in sorted(rows)}

    def where(self, split: str) -> str:
        return f"the {split} split of {self.path}"

    def read(self, key: Any) -> Image.Image:
        split, row = key
        image = self._data[split][row][self.image_key]
        return image.convert("RGB")

    def digests(self, keys: list[Any]) -> np.ndarray:
        """Arrow fingerprints (content of the source files) with the row: no image is read."""
        fingerprints = {split: data._fingerprint for split, data in self._data.items()}
        return digest_rows(hashlib.sha256(f"{fingerprints[k[0]]}|{k[1]}".encode()).digest() for k in keys)

    def relative(self, key: Any) -> str:
        """`<split>/<class>/<file>` as for image folders when the rows came from files, else `<split>/<row>`."""
        split, row = key
        files = self._files.get(split)
        return f"{split}/{files[row]}" if files else f"{split}/{row}"

    def _class_name(self, data):
        """label value -> class name (a ClassLabel column's names, else the value as text)."""
        names = getattr(data.features[self.label_key], "names", None)
        return (lambda label: names[label]) if names else str

    def _paths(self, data) -> list[str] | None:
        """`<class folder>/<file>` of each row of an imagefolder dataset (read from Arrow without the
        image bytes), or None when the rows have no file paths (parquet, hub datasets)."""
        column = data.data.column(self.image_key)
        try:
            paths = column.combine_chunks().field("path").to_pylist()
        except Exception:
            return None
        if not paths or not all(paths):
            return None
        return [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "format": "huggingface", "path": self.path}


def _local_source(local: Path) -> dict[str, Any]:
    """`load_dataset` arguments for a local directory: parquet files (at most two levels down), or an
    imagefolder given one pattern per split folder (with `data_dir` alone, `datasets` tries each of its
    ~50 split patterns, every one walking the whole tree: minutes for 100k files)."""
    if next(local.glob("*.parquet"), None) or next(local.glob("*/*.parquet"), None):
        return {"path": "parquet", "data_dir": str(local)}
    splits = [name for names in SPLIT_NAMES.values() for name in names if (local / name).is_dir()]
    if not splits:
        return {"path": "imagefolder", "data_dir": str(local)}
    return {"path": "imagefolder", "data_files": {name: str(local / name / "**") for name in splits}}
