"""Named distribution shifts of a test split, applied offline and seeded: rotation, Gaussian noise,
inversion, blur and elastic distortion (torchvision's `transforms.v2.functional` kernels).

Each image's shift is drawn from its own generator, seeded by (shift seed, shift name, image index): the
shifted set is the same whatever the batch size, the number of workers or the order of reading, and the
labels are those of the split it shifts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from transferlab.core.errors import TransferlabError, did_you_mean

Kernel = Callable[[torch.Tensor, torch.Generator, dict[str, Any]], torch.Tensor]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def rotation(x: torch.Tensor, g: torch.Generator, p: dict[str, Any]) -> torch.Tensor:
    """Rotate by an angle of magnitude in `degrees` [low, high], random sign; the corners are `fill`."""
    low, high = p["degrees"]
    angle = _uniform(g, float(low), float(high)) * (1.0 if torch.rand((), generator=g) < 0.5 else -1.0)
    return F.rotate(x, angle, interpolation=v2.InterpolationMode.BILINEAR, fill=[float(p["fill"])] * len(x))


def gaussian_noise(x: torch.Tensor, g: torch.Generator, p: dict[str, Any]) -> torch.Tensor:
    """Add N(0, `std`^2) per pixel (pixel values in [0, 1]), clipped to [0, 1]."""
    return (x + float(p["std"]) * torch.randn(x.shape, generator=g)).clamp_(0.0, 1.0)


def invert(x: torch.Tensor, g: torch.Generator, p: dict[str, Any]) -> torch.Tensor:
    """1 - pixel (a photographic negative)."""
    return F.invert(x)


def blur(x: torch.Tensor, g: torch.Generator, p: dict[str, Any]) -> torch.Tensor:
    """Gaussian blur of standard deviation `sigma` pixels (kernel 2*ceil(3 sigma)+1)."""
    sigma = float(p["sigma"])
    size = 2 * math.ceil(3 * sigma) + 1
    return F.gaussian_blur(x, [size, size], [sigma, sigma])


def elastic(x: torch.Tensor, g: torch.Generator, p: dict[str, Any]) -> torch.Tensor:
    """Elastic distortion as `v2.ElasticTransform(alpha, sigma)`, its displacement field drawn from `g`."""
    alpha, sigma = float(p["alpha"]), float(p["sigma"])
    height, width = x.shape[-2:]
    size = int(8 * sigma + 1) | 1  # odd, as ElasticTransform's
    fields = []
    for scale in (width, height):
        d = torch.rand(1, 1, height, width, generator=g) * 2 - 1
        if sigma > 0:
            d = F.gaussian_blur(d, [size, size], [sigma, sigma])
        fields.append(d * alpha / scale)
    displacement = torch.cat(fields, 1).permute(0, 2, 3, 1)
    return F.elastic(
        x, displacement, interpolation=v2.InterpolationMode.BILINEAR, fill=[float(p["fill"])] * len(x)
    )


@dataclass(frozen=True)
class ShiftKind:
    kernel: Kernel
    defaults: dict[str, Any] = field(default_factory=dict)


SHIFTS: dict[str, ShiftKind] = {
    "rotation": ShiftKind(rotation, {"degrees": [30.0, 45.0], "fill": 0.0}),
    "gaussian_noise": ShiftKind(gaussian_noise, {"std": 0.3}),
    "invert": ShiftKind(invert),
    "blur": ShiftKind(blur, {"sigma": 1.5}),
    "elastic": ShiftKind(elastic, {"alpha": 30.0, "sigma": 3.0, "fill": 0.0}),
}


@dataclass(frozen=True)
class Shift:
    """One named shift with its parameters and seed."""

    kind: str
    params: dict[str, Any]
    seed: int = 0

    @classmethod
    def of(cls, spec: dict[str, Any], where: str) -> Shift:
        """From an eval-set spec (`shift: NAME`, `seed`, parameters); unknown names or keys are refused."""
        kind = str(spec["shift"])
        if kind not in SHIFTS:
            raise TransferlabError(
                f"{where}.shift={kind} is not a known shift.{did_you_mean(kind, list(SHIFTS))} "
                f"Known: {', '.join(SHIFTS)}."
            )
        defaults = SHIFTS[kind].defaults
        given = {k: v for k, v in spec.items() if k not in ("shift", "seed")}
        unknown = [k for k in given if k not in defaults]
        if unknown:
            allowed = ", ".join(defaults) or "none"
            raise TransferlabError(
                f"{where}.{unknown[0]} is not a parameter of shift {kind}; its parameters: {allowed}."
            )
        params = {**defaults, **given}
        if kind == "rotation" and (
            len(params["degrees"]) != 2 or params["degrees"][0] > params["degrees"][1]
        ):
            raise TransferlabError(
                f"{where}.degrees={list(params['degrees'])} must be [low, high] with low <= high."
            )
        return cls(
            kind,
            {k: list(v) if isinstance(v, Sequence) else v for k, v in params.items()},
            int(spec.get("seed", 0)),
        )

    def generator(self, index: int) -> torch.Generator:
        """The generator of image `index`: a pure function of (seed, kind, index)."""
        key = hashlib.sha256(f"{self.seed}|{self.kind}|{index}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))

    def __call__(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return SHIFTS[self.kind].kernel(x, self.generator(index), self.params)

    def describe(self) -> dict[str, Any]:
        return {"shift": self.kind, "seed": self.seed, **self.params}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()


class ShiftedDataset(Dataset):
    """(key, label) samples read as RGB, resized to `image_size` (as the evaluation transform does), shifted
    in [0, 1], then normalized."""

    def __init__(self, samples, read, shift: Shift, image_size: int, mean, std):
        self.samples = list(samples)
        self.read = read
        self.shift = shift
        # exactly the first steps of `transforms.eval_transform`: an unshifted image is the test's image
        self.resize = T.Compose([T.Resize((image_size, image_size), antialias=True), T.ToTensor()])
        self.normalize = v2.Normalize(list(mean), list(std))

    def __len__(self) -> int:
        return len(self.samples)

    def pixels(self, index: int) -> torch.Tensor:
        """Image `index` shifted, before normalization (values in [0, 1])."""
        key, _ = self.samples[index]
        return self.shift(self.resize(self.read(key)), index)

    def __getitem__(self, index: int):
        with one_thread():
            return self.normalize(self.pixels(index)), self.samples[index][1]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread for per-image kernels: on a busy machine several threads spinning over a
    32x32 image cost ~50x more (DataLoader workers run with one thread already)."""
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)
