"""Data: sources (image folders, the embedded digits, Hugging Face datasets, WebDataset shards) behind
one interface (`transferlab.data.sources.DataSource`), and the one `DataModule` that splits, augments
and loads any of them.

The names below load on first use: `transferlab-pack` and the configuration check import parts of this
package (the folder scanner, the sources) without loading torch or Lightning."""

from transferlab.core.lazy import lazy_names

_HOMES = {
    "DataModule": "datamodule",
    "DataSource": "sources",
    "DigitsDataModule": "digits",
    "DigitsSource": "digits",
    "ImageDataset": "loaders",
    "ImageFolderDataModule": "image_folder",
    "ImageFolderSource": "folders",
    "StreamingSource": "sources",
    "materialize_digits": "digits",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
