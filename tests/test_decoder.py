"""dataset.decoder=torchvision: torchvision.io decoding and transforms.v2 on uint8 tensors give the PIL
path's images up to resampling: the decoded pixels are equal, resized ones differ by at most one 8-bit
level (measured: max 1/255 before normalization, i.e. 0.0078 after std 0.5; mean 0.001)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from transferlab.data import ImageFolderDataModule
from transferlab.data.folders import read_file
from transferlab.data.transforms import decode_file
from transferlab.run.job import train

ONE_LEVEL = 1 / 255 / 0.5  # one 8-bit level after normalizing with std 0.5


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """JPEGs, 8-bit PNGs (RGB and grayscale) and BMPs (decoded by PIL in both paths), 48 px."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 48)
    for split, n in (("train", 8), ("test", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                wave = np.sin(grid[:, None] * rng.uniform(3, 30) + grid[None, :] * rng.uniform(3, 30))
                pixels = 127 + 100 * wave[..., None] * rng.uniform(0.2, 1, 3) + rng.normal(0, 5, (48, 48, 3))
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                suffix = (".jpg", ".png", ".bmp", ".png")[i % 4]
                (image.convert("L") if i % 4 == 3 else image).save(root / split / c / f"{i}{suffix}")
    return root


def modules(root, tmp_path, **kwargs):
    common = dict(image_size=40, batch_size=16, num_workers=0, mean=(0.5,) * 3, std=(0.5,) * 3, seed=3)
    common |= dict(manifest_dir=str(tmp_path / "manifests"), augment={"zoom": (0.3, 1.0), "hflip": 0.5})
    return (ImageFolderDataModule(str(root), decoder=d, **common, **kwargs) for d in ("pil", "torchvision"))


def test_decoded_pixels_are_equal(mixed_folder):
    files = sorted(str(p) for p in (mixed_folder / "train").rglob("*.*"))
    for path in files:
        tensor = decode_file(path, fallback=read_file)
        if path.endswith(".bmp"):
            assert isinstance(tensor, Image.Image)  # PIL reads what torchvision.io does not
            continue
        assert tensor.dtype == torch.uint8 and tensor.shape == (3, 48, 48), path
        assert torch.equal(tensor, pil_to_tensor(read_file(path))), path  # grayscale becomes 3 channels too


def test_batches_equal_up_to_one_level(mixed_folder, tmp_path):
    pil, tensors = modules(mixed_folder, tmp_path)
    x_pil, y_pil = next(iter(pil.eval_dataloader("train")))
    x_tv, y_tv = next(iter(tensors.eval_dataloader("train")))
    assert x_tv.dtype == torch.float32 and x_tv.shape == x_pil.shape == (12, 3, 40, 40)
    assert torch.equal(y_pil, y_tv)
    assert 0 < (x_pil - x_tv).abs().max() <= ONE_LEVEL + 1e-6  # resampling differs by one level at most
    # Augmented: with the same seed both draw the same crops and flips.
    torch.manual_seed(0)
    x_pil, _ = next(iter(pil.train_dataloader()))
    torch.manual_seed(0)
    x_tv, _ = next(iter(tensors.train_dataloader()))
    difference = (x_pil - x_tv).abs()
    assert difference.max() <= ONE_LEVEL + 1e-6 and difference.mean() < 0.1 * ONE_LEVEL
    assert tensors.describe()["decoder"] == "torchvision" and pil.describe()["decoder"] == "pil"


def test_run_records_the_decoder(make_cfg):
    record = train(make_cfg("dataset.decoder=torchvision", "dataset.classes=[0,1,2]"))
    assert record["status"] == "ok", record["error"]
    assert (
        record["data"]["decoder"] == "torchvision" and record["config"]["dataset"]["decoder"] == "torchvision"
    )
    assert record["metrics"]["test/acc"] > 0


@pytest.mark.slow
def test_every_source_gives_the_same_tensors_with_the_torchvision_decoder(tmp_path):
    """Shards and Hugging Face rows arrive as PIL images; the tensor transform takes them, and their
    pixels equal the folder's decoded by torchvision.io."""
    from transferlab.data.hf import HFDataModule
    from transferlab.data.pack import pack
    from transferlab.data.shards import ShardDataModule

    from .conftest import write_image_folder

    root = write_image_folder(tmp_path / "images", per_class=4, test_per_class=3)
    pack(root, tmp_path / "shards", shard_size=4)
    common = dict(image_size=16, num_workers=0, decoder="torchvision", manifest_dir=str(tmp_path / "m"))
    folder = ImageFolderDataModule(str(root), **common)
    shards = ShardDataModule(urls=str(tmp_path / "shards"), **common)
    hf = HFDataModule(path=str(root), hf_cache_dir=str(tmp_path / "hf"), **common)

    def pixels(module) -> list:
        module.setup()
        return sorted((x.numpy().tobytes(), y) for x, y in module.dataset("test", augment=False))

    expected = pixels(folder)
    assert len(expected) == 9 and pixels(shards) == expected and pixels(hf) == expected
