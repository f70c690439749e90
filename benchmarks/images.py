"""Helpers for the input-pipeline benchmarks: generated JPEG folders and a loader's images per second."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def write_jpeg_folder(
    root: Path, images: int, size: int = 224, classes: int = 4, test_images: int = 8, seed: int = 0
) -> Path:
    """ROOT/{train,test}/<class>/*.jpg: `images` training JPEGs of `size` x `size` (smooth colour fields
    with texture, quality 90: decode costs like a photo's, not like white noise's)."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
    for split, count in (("train", images), ("test", test_images)):
        for i in range(count):
            folder = root / split / f"class_{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            low = rng.random((8, 8, 3), dtype=np.float32)
            field = np.kron(low, np.ones((size // 8 + 1, size // 8 + 1, 1), np.float32))[:size, :size]
            wave = np.sin(grid[:, None] * rng.uniform(5, 40) + grid[None, :] * rng.uniform(5, 40))[..., None]
            pixels = np.clip(200 * field + 40 * wave + rng.normal(0, 6, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def loader_rate(loader: Iterable, batches: int) -> dict[str, float]:
    """Images per second over `batches` batches after the first (worker start-up and the first batch are
    timed apart, as `first_batch_seconds`)."""
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter()
    seen = 0
    for _ in range(batches):
        try:
            x = next(iterator)[0]
        except StopIteration:
            break
        seen += len(x)
    elapsed = time.perf_counter() - first
    del iterator  # shuts the workers down
    return {"images_per_second": seen / elapsed if elapsed else 0.0, "first_batch_seconds": first - start}
