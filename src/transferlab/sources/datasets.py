"""Source datasets of the offline zoo, generated on this machine (no download), written once as image
folders and then read by the same image-folder code as user data:

- `ShiftedDigitsDataModule`: the embedded digits in another domain (inverted, with seeded noise).
- `FractalsDataModule`: formula-driven images with generated labels, one class per random iterated
  function system (as FractalDB, Kataoka et al. 2020 "Pre-training without natural images").
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.data.digits import materialize, materialize_digits
from transferlab.data.image_folder import ImageFolderDataModule

log = logging.getLogger(__name__)
MIN_FILL = 0.1  # a fractal class must light at least this fraction of its pixels


# ----------------------------------------------------------------------------- shifted digits
def shift_digit(pixels: np.ndarray, rng: np.random.Generator, invert: bool, noise_std: float) -> np.ndarray:
    """One digit image (uint8) inverted and with Gaussian noise of `noise_std` (fraction of 255)."""
    x = pixels.astype(np.float64) / 255.0
    if invert:
        x = 1.0 - x
    x = x + rng.normal(scale=noise_std, size=x.shape)
    return np.clip(x * 255.0, 0, 255).round().astype(np.uint8)


class ShiftedDigitsDataModule(ImageFolderDataModule):
    """The embedded digits, inverted and noisy (same classes, another domain); train and test come from
    the digits' own train and test splits, so a digits test image never trains a shifted source."""

    def __init__(self, root: str, digits_root: str, invert: bool = True, noise_std: float = 0.2, **kwargs):
        kwargs.setdefault("name", "digits_shifted")
        self.digits_root, self.invert, self.noise_std = digits_root, bool(invert), float(noise_std)
        super().__init__(root=root, **kwargs)

    def prepare_root(self) -> None:
        source = materialize_digits(self.digits_root)

        def write(tmp: Path) -> None:
            rng = np.random.default_rng(0)
            for path in sorted(source.glob("*/*/*.png")):
                split, label = path.parent.parent.name, path.parent.name
                with Image.open(path) as im:
                    pixels = np.asarray(im.convert("L"))
                folder = tmp / split / label
                folder.mkdir(parents=True, exist_ok=True)
                shifted = shift_digit(pixels, rng, self.invert, self.noise_std)
                Image.fromarray(shifted, mode="L").save(folder / path.name)

        materialize(self.root, write, f"digits shifted (invert={self.invert}, noise_std={self.noise_std})")

    def prepare_data(self) -> None:
        self.prepare_root()


# ----------------------------------------------------------------------------- fractals
def ifs_system(rng: np.random.Generator, max_tries: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random contractive iterated function system: 2-4 affine maps (A, b) and their probabilities."""
    for _ in range(max_tries):
        n = int(rng.integers(2, 5))
        a = rng.uniform(-1.0, 1.0, size=(n, 2, 2))
        b = rng.uniform(-1.0, 1.0, size=(n, 2))
        if np.all(np.linalg.norm(a, ord=2, axis=(1, 2)) < 0.95):  # every map contracts
            det = np.abs(np.linalg.det(a)) + 1e-3
            return a, b, det / det.sum()
    raise RuntimeError("no contractive IFS found")  # practically unreachable


def render_ifs(
    a: np.ndarray, b: np.ndarray, p: np.ndarray, rng: np.random.Generator, size: int, points: int = 4000
) -> np.ndarray:
    """Chaos game of (a, b, p) in parallel chains, randomly rotated and flipped, as a size x size image."""
    chains, steps, burn = 200, points // 200 + 12, 12
    x = rng.uniform(-1, 1, size=(chains, 2))
    seen = []
    for step in range(steps):
        k = rng.choice(len(p), size=chains, p=p)
        x = np.einsum("nij,nj->ni", a[k], x) + b[k]
        if step >= burn:
            seen.append(x)
    pts = np.concatenate(seen)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = pts @ rot.T * (rng.choice([-1.0, 1.0]), 1.0)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ij = ((pts - lo) / np.maximum(hi - lo, 1e-9) * (size - 3) + 1).astype(int)
    counts = np.zeros((size, size))
    np.add.at(counts, (ij[:, 1], ij[:, 0]), 1.0)
    return (255.0 * np.log1p(counts) / np.log1p(counts.max())).round().astype(np.uint8)


def write_fractals(
    tmp: Path, classes: int, train: int, test: int, size: int, seed: int, jitter: float
) -> None:
    """`classes` IFS classes; each image perturbs its class's maps by `jitter` (relative) and is rendered
    in a random orientation."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        a, b, p = ifs_system(rng)
        while (render_ifs(a, b, p, rng, size) > 0).mean() < MIN_FILL:  # FractalDB's filling-rate check
            a, b, p = ifs_system(rng)
        for split, n in (("train", train), ("test", test)):
            folder = tmp / split / f"f{c:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = 1.0 + rng.normal(scale=jitter, size=a.shape)
                image = render_ifs(a * noise, b, p, rng, size)
                Image.fromarray(image, mode="L").save(folder / f"{i:04d}.png")


class FractalsDataModule(ImageFolderDataModule):
    """Formula-driven source: `fractal_classes` random IFS fractals, `train_per_class` / `test_per_class`
    seeded images each, written once under `root` (the parameters are part of the folder name)."""

    def __init__(
        self,
        root: str,
        fractal_classes: int = 50,
        train_per_class: int = 40,
        test_per_class: int = 8,
        fractal_size: int = 32,
        fractal_seed: int = 0,
        jitter: float = 0.05,
        **kwargs,
    ):
        kwargs.setdefault("name", "fractals")
        self.spec = (int(fractal_classes), int(train_per_class), int(test_per_class), int(fractal_size))
        self.fractal_seed, self.jitter = int(fractal_seed), float(jitter)
        super().__init__(root=root, **kwargs)

    def prepare_root(self) -> None:
        classes, train, test, size = self.spec
        materialize(
            self.root,
            lambda tmp: write_fractals(tmp, classes, train, test, size, self.fractal_seed, self.jitter),
            f"fractals (classes={classes}, train={train}, test={test}, size={size}, seed={self.fractal_seed})",
        )

    def prepare_data(self) -> None:
        self.prepare_root()
