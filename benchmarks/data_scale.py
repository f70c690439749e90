"""Data set-up and loading at scale: transferlab against torchvision's ImageFolder + DataLoader.

Generates a synthetic seed-layout folder (10 classes, 64x64 PNG) unless `--root` is given, then runs each
arm in its own process (so peak RSS is the arm's own), interleaved (tl, tv, tl, tv, ...) and repeated:

- setup cold (transferlab: no manifest yet; both: as the page cache is, the machine's files stay
  cached) and warm (manifest present; `dataset.recheck=files`, a stat per file, and
  `transferlab_folders`: `dataset.recheck=folders`, a stat per folder), time to first batch, one epoch
  (decode + resize to 32 px, 2 workers), peak RSS of the main process; also transferlab on the same data
  as WebDataset shards and as a Hugging Face imagefolder (their own setup, first batch and epoch).
- Both arms set up what a run needs: the train and the test split (torchvision: two `ImageFolder`s;
  transferlab also draws the validation split and checks the data).

Prints JSON with medians and min-max, and the ratios `setup_ratio_warm`, `first_batch_ratio_warm` and
`epoch_ratio` (transferlab / torchvision, medians), the same with `_folders` for recheck=folders.

    python -m benchmarks.data_scale --images 10000 [--root DIR] [--repeats 3] [--in-process]

`--in-process` (smoke tests) runs every arm in this process: nothing is imported per arm, and the peak
RSS is then this process's, not the arm's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import emit

WORKERS = 2
BATCH = 256


def generate(root: Path, images: int, classes: int = 10, test_fraction: float = 0.2) -> None:
    """`images` random 64x64 PNGs in ROOT/{train,test}/<class>/, written once."""
    marker = root / f".generated-{images}"
    if marker.is_file():
        return
    rng = np.random.default_rng(0)
    for i in range(images):
        split = "test" if (i // classes) % int(1 / test_fraction) == 0 else "train"
        folder = root / split / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:07d}.png")
    marker.write_text("ok")


def arm(kind: str, root: str, cache: str) -> dict:
    """One measurement, run in a fresh process: set-up, first batch, one epoch, peak RSS."""
    import torch
    from torchvision import datasets

    from transferlab.data.hf import HFDataModule
    from transferlab.data.image_folder import ImageFolderDataModule
    from transferlab.data.shards import ShardDataModule
    from transferlab.data.transforms import Augment, train_transform

    torch.set_num_threads(1)
    start = time.perf_counter()  # imports done: set-up alone is timed
    if kind == "torchvision":  # the same transform as transferlab's training loader
        transform = train_transform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), Augment())
        dataset = datasets.ImageFolder(os.path.join(root, "train"), transform=transform)
        datasets.ImageFolder(os.path.join(root, "test"), transform=transform)  # a run tests too
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS)
    else:
        common = {"image_size": 32, "batch_size": BATCH, "num_workers": WORKERS, "val_fraction": 0.05}
        if kind == "webdataset":
            module = ShardDataModule(urls=os.path.join(cache, "shards"), **common)
        elif kind == "hf":
            module = HFDataModule(
                path=root,
                hf_cache_dir=os.path.join(cache, "hf"),
                manifest_dir=os.path.join(cache, "manifests"),  # as dataset=hf configures it
                **common,
            )
        else:
            recheck = "folders" if kind == "transferlab_folders" else "files"
            module = ImageFolderDataModule(
                root=root, manifest_dir=os.path.join(cache, "manifests"), recheck=recheck, **common
            )
        module.setup()
        loader = module.train_dataloader()
    setup = time.perf_counter() - start
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    count = BATCH
    for x, _ in iterator:
        count += len(x)
    epoch = time.perf_counter() - start - first
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"setup": setup, "first_batch": first, "epoch": epoch, "samples": count, "rss_mb": rss}


def run_arm(kind: str, root: Path, cache: Path, in_process: bool = False) -> dict:
    if in_process:  # smoke tests: no import per arm (peak RSS is then this process's, not the arm's)
        return arm(kind, str(root), str(cache))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.data_scale",
            "--arm",
            kind,
            "--root",
            str(root),
            "--cache",
            str(cache),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="smoke tests: every arm in this process")
    parser.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, str(args.root), args.cache)))
        return
    work = Path(tempfile.mkdtemp(prefix="transferlab-data-"))
    root = args.root or work / "images"
    if args.root is None:
        generate(root, args.images)
    from transferlab.data.pack import pack

    pack(root, work / "shards", shard_size=1000)
    results: dict[str, list[dict]] = {
        "cold": [],
        "transferlab": [],
        "transferlab_folders": [],
        "torchvision": [],
        "webdataset": [],
        "hf": [],
    }
    one = args.in_process
    run_arm("hf", root, work, one)  # not measured: builds the Hugging Face cache, as any first run does
    for _ in range(args.repeats):
        shutil.rmtree(work / "manifests", ignore_errors=True)
        results["cold"].append(run_arm("transferlab", root, work, one))  # no manifest yet
        run_arm("transferlab_folders", root, work, one)  # not measured: records the folders' mtimes
        for kind in ("torchvision", "transferlab", "transferlab_folders", "webdataset", "hf"):
            results[kind].append(run_arm(kind, root, work, one))
    report = {
        "images": sum(1 for _ in root.rglob("*.png")),
        "repeats": args.repeats,
        **{
            kind: {
                key: summary([r[key] for r in runs]) for key in ("setup", "first_batch", "epoch", "rss_mb")
            }
            for kind, runs in results.items()
        },
    }
    median = {kind: {k: v["median"] for k, v in report[kind].items()} for kind in results}
    tv = median["torchvision"]
    report["setup_ratio_cold"] = median["cold"]["setup"] / tv["setup"]
    report["setup_ratio_warm"] = median["transferlab"]["setup"] / tv["setup"]
    report["first_batch_ratio_warm"] = median["transferlab"]["first_batch"] / tv["first_batch"]
    report["setup_ratio_warm_folders"] = median["transferlab_folders"]["setup"] / tv["setup"]
    report["first_batch_ratio_warm_folders"] = (
        median["transferlab_folders"]["first_batch"] / tv["first_batch"]
    )
    report["epoch_ratio"] = median["transferlab"]["epoch"] / tv["epoch"]
    for kind in ("webdataset", "hf"):
        report[f"{kind}_epoch_ratio"] = median[kind]["epoch"] / tv["epoch"]
        report[f"{kind}_first_batch_ratio"] = median[kind]["first_batch"] / tv["first_batch"]
    emit(report)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
