"""Training input pipeline at real image sizes: images per second per worker for generated 224 px JPEGs.

Decode + RandomResizedCrop + horizontal flip + normalize, batched by a DataLoader, in four arms:
`transferlab` (our data module from the composed `dataset=image_folder` config, PIL decoder),
`transferlab_torchvision` (the same with `dataset.decoder=torchvision`), `torchvision_imagefolder`
(torchvision's `ImageFolder` with our PIL transforms) and `tensor_v2` (a bare `torchvision.io.decode_jpeg`
+ `transforms.v2` dataset on uint8 tensors, the reference for the tensor path). For each worker count
the arms alternate after a warm-up round, `--repeats` times; each measurement starts a fresh loader and
times `--batches` batches after the first. Prints JSON: images/second (and per worker) as median with
min-max, and per-repeat ratios against the PIL data module.

    .venv/bin/python -m benchmarks.input_pipeline [--images 1200] [--workers 1,2] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import compose_run, emit, interleaved, ratio, spread, workdir
from benchmarks.images import IMAGENET_MEAN, IMAGENET_STD, loader_rate, write_jpeg_folder

ARMS = ("transferlab", "transferlab_torchvision", "torchvision_imagefolder", "tensor_v2")


class JpegTensors(Dataset):
    """(image, label) from JPEG files: torchvision.io decode and transforms.v2 on uint8 tensors."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from torchvision.io import decode_jpeg, read_file

        path, label = self.samples[index]
        return self.transform(decode_jpeg(read_file(path))), label


def v2_transform(size: int, zoom: tuple[float, float], hflip: float):
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=zoom, antialias=True),
            v2.RandomHorizontalFlip(hflip),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def data_module(args: argparse.Namespace, root, workers: int, decoder: str):
    """Our data module as `dataset=image_folder` composes it (no content hashing: not what is measured)."""
    from hydra.utils import instantiate

    cfg = compose_run(
        root / "run",
        [
            "dataset=image_folder",
            f"dataset.root={root}",
            f"dataset.image_size={args.image_size}",
            f"dataset.batch_size={args.batch_size}",
            f"dataset.num_workers={workers}",
            f"dataset.decoder={decoder}",
            "dataset.persistent_workers=false",
            "dataset.verify=none",
            "dataset.hash=stat",
            f"dataset.manifest_dir={root / 'manifests'}",
            "dataset.val_fraction=0.02",
            f"dataset.augment.zoom=[{args.zoom[0]},{args.zoom[1]}]",
            f"dataset.augment.hflip={args.hflip}",
        ],
    )
    data = instantiate(cfg.dataset, data_config={"mean": IMAGENET_MEAN, "std": IMAGENET_STD}, _convert_="all")
    data.setup("fit")
    return data


def loaders(args: argparse.Namespace, root, workers: int) -> dict:
    """A function per arm that builds its (fresh) training loader over the same training files."""
    from torchvision.datasets import ImageFolder

    ours = data_module(args, root, workers, "pil")
    tensor_path = data_module(args, root, workers, "torchvision")
    pil_transform = ours.transform("train")
    samples = ours.splits["train"]

    def plain(dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers)

    return {
        "transferlab": ours.train_dataloader,
        "transferlab_torchvision": tensor_path.train_dataloader,
        "torchvision_imagefolder": lambda: plain(ImageFolder(str(root / "train"), transform=pil_transform)),
        "tensor_v2": lambda: plain(
            JpegTensors(samples, v2_transform(args.image_size, args.zoom, args.hflip))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--jpeg-size", type=int, default=224)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=16, help="timed batches per measurement")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--zoom", type=float, nargs=2, default=(0.08, 1.0), help="RandomResizedCrop scale")
    parser.add_argument("--hflip", type=float, default=0.5)
    args = parser.parse_args()
    args.zoom = tuple(args.zoom)
    root = write_jpeg_folder(workdir() / "jpegs", args.images, args.jpeg_size)
    result = {
        "benchmark": "input_pipeline",
        "images": args.images,
        "jpeg_size": args.jpeg_size,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "transforms": f"decode, RandomResizedCrop(scale={list(args.zoom)}), flip {args.hflip}, normalize",
        "torch_threads": torch.get_num_threads(),
        "workers": {},
    }
    for workers in [int(w) for w in args.workers.split(",")]:
        build = loaders(args, root, workers)
        runs = interleaved(
            {
                arm: (lambda b=b: loader_rate(b(), args.batches)["images_per_second"])
                for arm, b in build.items()
            },
            repeats=args.repeats,
        )
        per = max(workers, 1)
        result["workers"][workers] = {
            "images_per_second": {arm: spread(rates) for arm, rates in runs.items()},
            "images_per_second_per_worker": {
                arm: spread([r / per for r in rates]) for arm, rates in runs.items()
            },
            "ratio_over_transferlab_pil": {
                arm: ratio(rates, runs["transferlab"]) for arm, rates in runs.items() if arm != "transferlab"
            },
        }
    emit(result)


if __name__ == "__main__":
    main()
