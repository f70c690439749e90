"""Training augmentation (the classic set) and deterministic evaluation transforms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torchvision import transforms as T


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
    steps: list = [T.RandomResizedCrop(image_size, scale=tuple(augment.zoom), antialias=True)]
    if augment.shear or augment.rotation or augment.translate:
        translate = (augment.translate, augment.translate) if augment.translate else None
        steps.append(
            T.RandomAffine(degrees=augment.rotation, translate=translate, shear=augment.shear or None)
        )
    if augment.hflip:
        steps.append(T.RandomHorizontalFlip(augment.hflip))
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
