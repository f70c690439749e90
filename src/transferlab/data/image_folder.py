"""`ImageFolderDataModule`: the Keras `flow_from_directory` layout, ROOT/{train,val,test}/<class>/*, as the
shared `DataModule` over an `ImageFolderSource` (`dataset=image_folder`)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from transferlab.data.datamodule import DataModule
from transferlab.data.folders import (
    IMG_EXTENSIONS,
    ImageFolderSource,
    digest_rows,
    files_under,
    read_file,
    scan_class_folders,
    to_rgb,
)
from transferlab.data.loaders import ImageDataset, in_loky_worker
from transferlab.data.sources import DataSource

__all__ = [
    "IMG_EXTENSIONS",
    "ImageDataset",
    "ImageFolderDataModule",
    "digest_rows",
    "files_under",
    "in_loky_worker",
    "read_file",
    "scan_class_folders",
    "to_rgb",
]


class ImageFolderDataModule(DataModule):
    """Images in ROOT/train/<class>/*, ROOT/test/<class>/* and optional ROOT/val/<class>/* (without
    `val/`, a seeded stratified `val_fraction` of train is held out). Every other argument is the shared
    `DataModule`'s; a subclass may set `source_type` to another folder source (e.g. one that writes
    the folder first in its `prepare`)."""

    source_type: ClassVar[type[DataSource]] = ImageFolderSource

    def __init__(self, root: str | os.PathLike, **settings: Any):
        settings.setdefault("name", self.source_type.name)
        super().__init__(self.source_type(root), **settings)
