"""LightningDataModules: image folders (the common path) and the embedded digits."""

from transferlab.data.digits import DigitsDataModule, materialize_digits
from transferlab.data.image_folder import ImageDataset, ImageFolderDataModule

__all__ = ["DigitsDataModule", "ImageDataset", "ImageFolderDataModule", "materialize_digits"]
