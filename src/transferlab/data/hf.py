"""Hugging Face `datasets` as a data source (`dataset=hf`): a hub name, a local `imagefolder` or parquet
directory, or a `save_to_disk` folder. Images stay in memory-mapped Arrow files (memory stays flat);
class subsets, `samples_per_class`, the seeded validation split and augmentation are the shared
`DataModule`'s (an `HFSource` is a `DataSource`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from transferlab.core.atomic import atomic_open
from transferlab.core.errors import TransferlabError, did_you_mean
from transferlab.data.datamodule import DataModule
from transferlab.data.folders import digest_rows, files_under
from transferlab.data.manifest import Manifest
from transferlab.data.sources import DataSource, FileChecks

log = logging.getLogger(__name__)
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}


class HFSource(DataSource):
    """Images and labels of a Hugging Face dataset: `path` is a hub name or a local directory;
    `image_key`/`label_key` name the columns (a ClassLabel column gives the class names). `manifest_dir`
    and `recheck` let a local folder's unchanged files be found without `load_dataset`."""

    name = "hf"

    def __init__(
        self,
        path: str,
        image_key: str = "image",
        label_key: str = "label",
        config_name: str | None = None,
        hf_cache_dir: str | None = None,
        manifest_dir: str | None = None,
        recheck: str = "files",
    ):
        self.path = str(path)
        self.image_key, self.label_key = image_key, label_key
        self.config_name = config_name
        self.hf_cache_dir = hf_cache_dir
        self.root = Path(self.path).expanduser() if Path(self.path).expanduser().exists() else Path(self.path)
        self.manifest, self.recheck = Manifest(self.root, manifest_dir), recheck
        self._data: dict[str, Any] = {}
        self._files: dict[str, list[str] | None] = {}
        self._fingerprints: dict[str, str] = {}  # split -> the Arrow data's identity
        self.loaded_from = ""  # how the Arrow data was found, for results.json

    def prepare(self) -> None:
        import datasets

        local = Path(self.path).expanduser()
        fingerprints: dict[str, str] = {}
        try:
            if (local / "dataset_dict.json").is_file():
                loaded, self.loaded_from = datasets.load_from_disk(str(local)), "load_from_disk"
            elif local.is_dir():
                loaded, fingerprints = self._load_local(local, _local_source(local))
            else:
                loaded = datasets.load_dataset(self.path, self.config_name, cache_dir=self.hf_cache_dir)
                self.loaded_from = "load_dataset"
        except Exception as exc:
            raise TransferlabError(
                f"dataset.path={self.path}: cannot load it as a Hugging Face dataset ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); give a hub name (online) or a local "
                "imagefolder / parquet / save_to_disk directory."
            ) from None
        for ours, names in SPLIT_NAMES.items():
            found = next((n for n in names if n in loaded), None)
            if found is not None:
                data = loaded[found]
                self._data[ours] = (
                    data.flatten_indices() if data._indices is not None else data
                )  # rows as stored
                self._fingerprints[ours] = fingerprints.get(found) or data._fingerprint
        for split, data in self._data.items():
            for key in (self.image_key, self.label_key):
                if key not in data.column_names:
                    raise TransferlabError(
                        f"dataset.{'image_key' if key == self.image_key else 'label_key'}={key}: no such column in "
                        f"the {split} split of {self.path}.{did_you_mean(key, data.column_names)} Columns: "
                        f"{data.column_names}."
                    )

    def items(self, split: str) -> dict[str, list[Any]] | None:
        data = self._data.get(split)
        if data is None:
            if split != "val":
                raise TransferlabError(
                    f"dataset.path={self.path} has no {split} split (found {list(self._data)})."
                )
            return None
        name_of = self._class_name(data)
        paths = self._paths(data)
        self._files[split] = paths
        rows: dict[str, list[tuple[str, int]]] = {}
        for row, label in enumerate(data.data.column(self.label_key).to_pylist()):  # Arrow: no row decoding
            rows.setdefault(name_of(label), []).append((paths[row] if paths else f"{row:012d}", row))
        # Ordered as the image-folder module orders files, so the same files give the same split.
        return {c: [(split, row) for _, row in sorted(rows[c])] for c in sorted(rows)}

    def where(self, split: str) -> str:
        return f"the {split} split of {self.path}"

    def read(self, key: Any) -> Image.Image:
        split, row = key
        image = self._data[split][row][self.image_key]
        return image.convert("RGB")

    def digests(self, keys: list[Any], checks: FileChecks) -> np.ndarray:
        """Arrow fingerprints (content of the source files) with the row: no image is read."""
        fingerprints = self._fingerprints
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
        return ["/".join(p.replace(os.sep, "/").rsplit("/", 2)[-2:]) for p in paths]

    def describe(self) -> dict[str, Any]:
        return {"format": "huggingface", "path": self.path, "loaded_from": self.loaded_from}

    def _load_local(self, local: Path, source: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """A local folder's splits, and their fingerprints. While the folder's files are unchanged (a stat
        each, or per folder with dataset.recheck=folders, through the manifest) the Arrow files of the
        last `load_dataset` are memory-mapped again directly: `load_dataset` itself resolves every
        file's metadata on each call (seconds per 10k files)."""
        import datasets

        signature = self._signature(local, source)
        record_path = (
            Path(self.hf_cache_dir or datasets.config.HF_DATASETS_CACHE)
            / "transferlab"
            / (f"{hashlib.sha256(str(local.resolve()).encode()).hexdigest()[:16]}.json")
        )
        changed = False  # Arrow files changed since they were written: datasets' own cache is not trusted
        try:
            record = json.loads(record_path.read_text())
            changed = record["signature"] == signature and not _same_contents(record)
            if record["signature"] == signature and not changed:
                loaded = {
                    split: datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
                    for split, files in record["splits"].items()
                }
                self.loaded_from = "arrow files of an earlier load_dataset (folder unchanged)"
                return loaded, record["fingerprints"]
        except Exception:  # no record, another folder state, or the datasets cache was cleaned: load
            pass
        try:
            mode = "force_redownload" if changed else None
            loaded = datasets.load_dataset(**source, cache_dir=self.hf_cache_dir, download_mode=mode)
        except FileNotFoundError:  # its cache lost Arrow files (cleaned in part): prepare the folder again
            loaded = datasets.load_dataset(
                **source, cache_dir=self.hf_cache_dir, download_mode="force_redownload"
            )
        self.loaded_from = "load_dataset"
        record = {
            "signature": signature,
            "splits": {split: [f["filename"] for f in data.cache_files] for split, data in loaded.items()},
            "fingerprints": {split: data._fingerprint for split, data in loaded.items()},
        }
        # An Arrow file's fingerprint is not a content check: the files' sha256 decide whether it is reused.
        record["sha256"] = {f: _sha256(f) for files in record["splits"].values() for f in files}
        if all(record["splits"].values()):  # memory-mapped from files (not held in memory): reusable
            try:
                with atomic_open(record_path, "w") as f:
                    json.dump(record, f)
            except OSError as exc:
                log.warning(
                    "Cannot remember the Arrow files of %s (%s): the next run loads again.", local, exc
                )
        return loaded, record["fingerprints"]

    def _signature(self, local: Path, source: dict[str, Any]) -> str:
        """What `load_dataset` would read: every file under the source's folders (path, size, mtime), the
        source's arguments and the `datasets` version."""
        import datasets

        folders = [local / Path(p).parent.name for p in source.get("data_files", {}).values()] or [local]
        files = sorted(f for folder in folders for f in files_under(folder))
        digest = hashlib.sha256(f"{datasets.__version__}|{sorted(source.items())}|".encode())
        digest.update("\n".join(files).encode())
        digest.update(
            self.manifest.digests(files, verify="none", hash="stat", recheck=self.recheck).tobytes()
        )
        return digest.hexdigest()


class HFDataModule(DataModule):
    """`dataset=hf`: the shared `DataModule` over an `HFSource` (its arguments first, then the shared ones)."""

    source_type: ClassVar[type[DataSource]] = HFSource

    def __init__(
        self,
        path: str,
        image_key: str = "image",
        label_key: str = "label",
        config_name: str | None = None,
        hf_cache_dir: str | None = None,
        **settings: Any,
    ):
        settings.pop("root", None)  # the YAML's `root: ${.path}`: the source's own path decides
        source = HFSource(
            path,
            image_key,
            label_key,
            config_name,
            hf_cache_dir,
            settings.get("manifest_dir"),
            settings.get("recheck", "files"),
        )
        settings.setdefault("name", "hf")
        super().__init__(source, **settings)

    @property
    def loaded_from(self) -> str:
        """How the Arrow data was found (`load_dataset`, `load_from_disk`, earlier Arrow files)."""
        return self.source.loaded_from


def _same_contents(record: dict[str, Any]) -> bool:
    """Whether every Arrow file the record names still holds the bytes it held when it was written."""
    hashes = record.get("sha256")
    files = [f for names in record["splits"].values() for f in names]
    if not isinstance(hashes, dict) or not files:
        return False
    if not all(isinstance(f, str) and hashes.get(f) == _sha256(f) for f in files):
        log.warning("The Arrow cache of this folder changed since it was written: loading the folder again.")
        return False
    return True


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
