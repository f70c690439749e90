"""`ImageFolderDataModule`: the Keras `flow_from_directory` layout, ROOT/{train,val,test}/<class>/*, as the
shared `DataModule` over an `ImageFolderSource` (`dataset=image_folder`)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from transferlab.data.datamodule import DataModule
from transferlab.data.folders import ImageFolderSource
from transferlab.data.sources import DataSource


class ImageFolderDataModule(DataModule):
    """Images in ROOT/train/<class>/*, ROOT/test/<class>/* and optional ROOT/val/<class>/* (without
    `val/`, a seeded stratified `val_fraction` of train is held out). Every other argument is the shared
    `DataModule`'s; a subclass may set `source_type` to another folder source (e.g. one that writes
    the folder first in its `prepare`)."""

    source_type: ClassVar[type[DataSource]] = ImageFolderSource

    def __init__(self, root: str | os.PathLike, **settings: Any):
        settings.setdefault("name", self.source_type.name)
        super().__init__(self.source_type(root), **settings)
