"""Training augmentation (the classic set) and deterministic evaluation transforms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision import transforms as T
from torchvision.transforms import v2


@dataclass
class Augment:
    """Training augmentation; every field at its neutral value turns augmentation off."""

    enabled: bool = True
    zoom: Sequence[float] = (0.8, 1.0)  # RandomResizedCrop scale range
    shear: float = 0.0  # degrees, RandomAffine
    rotation: float = 0.0  # degrees, RandomAffine
    translate: float = 0.0  # fraction of the image, RandomAffine
    hflip: float = 0.0  # probability

    @property
    def active(self) -> bool:
        return bool(self.enabled) and (
            tuple(self.zoom) != (1.0, 1.0) or self.shear or self.rotation or self.translate or self.hflip
        )


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Resize to a square, to tensor, normalize: deterministic."""
    return T.Compose(
        [T.Resize((image_size, image_size), antialias=True), T.ToTensor(), T.Normalize(mean, std)]
    )


def train_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], augment: Augment
) -> T.Compose:
    """The evaluation transform preceded by the configured random zoom, affine and flip."""
    if not augment.active:
        return eval_transform(image_size, mean, std)
    return T.Compose([*augment_steps(T, image_size, augment), T.ToTensor(), T.Normalize(mean, std)])


def augment_steps(transforms: Any, image_size: int, augment: Augment) -> list:
    """The random zoom, affine and flip, from `transforms` (torchvision's `transforms` or `transforms.v2`,
    which take the same arguments): one recipe for the PIL and the tensor path."""
    steps: list = [transforms.RandomResizedCrop(image_size, scale=tuple(augment.zoom), antialias=True)]
    if augment.shear or augment.rotation or augment.translate:
        translate = (augment.translate, augment.translate) if augment.translate else None
        steps.append(
            transforms.RandomAffine(
                degrees=augment.rotation, translate=translate, shear=augment.shear or None
            )
        )
    if augment.hflip:
        steps.append(transforms.RandomHorizontalFlip(augment.hflip))
    return steps


def tensor_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], augment: Augment | None = None
) -> v2.Compose:
    """`dataset.decoder=torchvision`: the same steps on uint8 image tensors (or PIL images), torchvision
    `transforms.v2`, float only for the normalization; the evaluation transform when `augment` is None or
    off. Outputs equal the PIL path's up to resampling differences (see tests/test_data.py)."""
    steps: list = [v2.ToImage()]
    if augment is None or not augment.active:
        steps.append(v2.Resize((image_size, image_size), antialias=True))
    else:
        steps += augment_steps(v2, image_size, augment)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose(steps)


TENSOR_DECODED = (".jpg", ".jpeg", ".png")


def decode_file(path: str, fallback: Callable[[str], Any]) -> Any:
    """`dataset.decoder=torchvision`: a JPEG or 8-bit PNG as a uint8 RGB tensor (CHW) decoded by
    torchvision.io; other files (and 16-bit PNGs) as `fallback(path)` gives them (a PIL image, which
    `tensor_transform` also takes)."""
    if not str(path).lower().endswith(TENSOR_DECODED):
        return fallback(path)
    from torchvision.io import ImageReadMode, decode_image

    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError:
        return fallback(path)  # names the file if it cannot read it either
    return image if image.dtype == torch.uint8 else fallback(path)
