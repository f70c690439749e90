"""Image folders as a data source: the Keras `flow_from_directory` layout, ROOT/{train,val,test}/<class>/*,
listed with one `scandir` per folder, read with PIL (16/32-bit pixels rescaled), digested through the
manifest (only changed files are read)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferlab.core.errors import TransferlabError
from transferlab.data.sources import DataSource, FileChecks

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageFolderSource(DataSource):
    """Images in ROOT/train/<class>/*, ROOT/test/<class>/* and optional ROOT/val/<class>/* (the item keys
    are absolute file paths)."""

    name = "image_folder"
    root_must_exist = True

    def __init__(self, root: str | os.PathLike):
        self.root = Path(str(root)).expanduser()
        if self.root.exists():
            self.root = self.root.resolve()  # file keys are absolute: the manifest finds them without relpath

    def items(self, split: str) -> Mapping[str, Sequence[str]] | None:
        if split == "val" and not (self.root / split).is_dir():
            return None
        return scan_class_folders(self._require_split_dir(split))

    def read(self, key: str) -> Image.Image:
        return read_file(key)

    def read_tensor(self, key: str) -> Any:
        """Files through torchvision.io (JPEG, 8-bit PNG), others as `read` gives them."""
        from transferlab.data.transforms import decode_file

        return decode_file(key, fallback=read_file)

    def digests(self, keys: Sequence[str], checks: FileChecks) -> np.ndarray:
        """The content's sha256 (or size and mtime) of each file, from the manifest."""
        return checks.digests(keys)

    def relative(self, key: str) -> str:
        return key[len(str(self.root)) + 1 :]

    def where(self, split: str) -> str:
        return str(self.root / split)

    def _require_split_dir(self, split: str) -> Path:
        if not self.root.is_dir():
            raise root_error(self.root)
        path = self.root / split
        if not path.is_dir():
            raise TransferlabError(
                f"dataset.root={self.root} has no {split}/ folder; expected {self.root}/{split}/<class>/<image> "
                "(Keras flow_from_directory layout)."
            )
        return path


def root_error(root: Any) -> TransferlabError:
    """The one message for a `dataset.root` that is no folder: the pre-flight's and the source's own."""
    return TransferlabError(
        f"dataset.root={root}: no such directory (it does not exist or is not a folder); set dataset.root to "
        "a folder with train/<class>/* and test/<class>/* images."
    )


def read_file(path: Path) -> Image.Image:
    """An image file as RGB; an unreadable file is named in the error."""
    try:
        with Image.open(path) as im:
            return to_rgb(im, path)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise TransferlabError(f"Cannot read image {path}: {exc}. Remove or replace the file.") from None


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # 16-bit, 32-bit integer, 32-bit float pixels


def to_rgb(image: Image.Image, path: Any = "") -> Image.Image:
    """`image` as 8-bit RGB. PIL's own `convert` clips 16/32-bit and float pixels (a 16-bit PNG becomes
    almost all white): those are rescaled from their range (16-bit: 0-65535; float: 0-1 or 0-255) instead,
    and values outside every known range are refused, naming the file."""
    if image.mode not in WIDE_MODES:
        return image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scale = 255 / 65535
    elif image.mode == "F" and low >= 0 and high <= 1:
        scale = 255.0
    elif low >= 0 and high <= 255 and image.mode == "F":
        scale = 1.0
    elif low >= 0 and high <= 65535:  # 32-bit integer pixels holding 16-bit values (PNG, TIFF)
        scale = 255 / 65535
    else:
        raise ValueError(
            f"{image.mode} pixels range from {low:g} to {high:g}, outside 0-1, 0-255 and 0-65535: convert the "
            "file to 8 or 16 bits per channel"
        )
    gray = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def scan_class_folders(split_dir: Path) -> dict[str, list[str]]:
    """Class name -> sorted image file paths of one split directory (subfolders included); an empty
    class folder is an error. One `scandir` per folder: no per-file system call."""
    with os.scandir(split_dir) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not _hidden(e.name))
    if not classes:
        raise TransferlabError(
            f"{split_dir} has no class folders; expected {split_dir}/<class>/<image> (one folder per class)."
        )
    found, skipped = {}, []
    for name in classes:
        files = sorted(files_under(os.path.join(split_dir, name), IMG_EXTENSIONS, skipped))
        if not files:
            raise TransferlabError(
                f"Class folder {split_dir / name} has no images ({', '.join(IMG_EXTENSIONS)}); add images or "
                "remove the folder."
            )
        found[name] = files
    if skipped:
        log.info(
            "%s: skipped %d hidden file(s) or folder(s) (names starting with '.', e.g. macOS '._' files), "
            "as file browsers hide them: %s",
            split_dir,
            len(skipped),
            ", ".join(os.path.basename(p) for p in skipped[:3]),
        )
    return found


def _hidden(name: str) -> bool:
    """What file browsers hide (dot files, macOS AppleDouble '._x' files) and zip tools' '__MACOSX'."""
    return name.startswith(".") or name == "__MACOSX"


def files_under(
    directory: str | os.PathLike, suffixes: tuple[str, ...] | None = None, skipped: list[str] | None = None
) -> list[str]:
    """Regular files under `directory` (subfolders included), those ending in `suffixes` (any case) if
    given; one `scandir` per folder. Hidden files and folders (`_hidden`) are skipped (and appended to
    `skipped`); a folder reached twice through symbolic links (a loop) is walked once."""
    files, folders = [], [str(directory)]
    seen: set[tuple[int, int]] = set()
    while folders:
        folder = folders.pop()
        try:
            stat = os.stat(folder)
        except OSError as exc:  # a dangling link or a loop the OS refuses to follow
            raise TransferlabError(
                f"Cannot open folder {folder} ({exc.strerror}); fix or remove the symbolic link."
            ) from None
        if (stat.st_dev, stat.st_ino) in seen:
            log.warning("Symbolic link loop: %s is already listed; not following it again.", folder)
            continue
        seen.add((stat.st_dev, stat.st_ino))
        with os.scandir(folder) as entries:
            for entry in entries:  # the name first: no call to is_dir for the (many) images
                if _hidden(entry.name):
                    if skipped is not None:
                        skipped.append(entry.path)
                    continue
                if (suffixes is None or entry.name.lower().endswith(suffixes)) and entry.is_file():
                    files.append(entry.path)
                elif entry.is_dir():
                    folders.append(entry.path)
    return files


def digest_rows(digests: Iterable[bytes], width: int = 32) -> np.ndarray:
    """Digests of `width` bytes each (given one by one or joined) as the rows of a uint8 array (what
    `digests` returns)."""
    return np.frombuffer(b"".join(digests), np.uint8).reshape(-1, width)
