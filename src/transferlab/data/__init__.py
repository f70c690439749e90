"""Data: sources (image folders, the embedded digits, Hugging Face datasets, WebDataset shards) behind
one interface (`transferlab.data.sources.DataSource`), and the one `DataModule` that splits, augments
and loads any of them."""

from transferlab.data.datamodule import DataModule
from transferlab.data.digits import DigitsDataModule, DigitsSource, materialize_digits
from transferlab.data.folders import ImageFolderSource
from transferlab.data.image_folder import ImageFolderDataModule
from transferlab.data.loaders import ImageDataset
from transferlab.data.sources import DataSource, StreamingSource

__all__ = [
    "DataModule",
    "DataSource",
    "DigitsDataModule",
    "DigitsSource",
    "ImageDataset",
    "ImageFolderDataModule",
    "ImageFolderSource",
    "StreamingSource",
    "materialize_digits",
]
