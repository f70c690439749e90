"""Data: sources (image folders, the embedded digits, Hugging Face datasets, WebDataset shards) behind
one interface (`transferlab.data.sources.DataSource`), and the one `DataModule` that splits, augments
and loads any of them.

The names below load on first use: `transferlab-pack` and the configuration check import parts of this
package (the folder scanner, the sources) without loading torch or Lightning."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "DataModule": "transferlab.data.datamodule",
    "DataSource": "transferlab.data.sources",
    "DigitsDataModule": "transferlab.data.digits",
    "DigitsSource": "transferlab.data.digits",
    "ImageDataset": "transferlab.data.loaders",
    "ImageFolderDataModule": "transferlab.data.image_folder",
    "ImageFolderSource": "transferlab.data.folders",
    "StreamingSource": "transferlab.data.sources",
    "materialize_digits": "transferlab.data.digits",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
