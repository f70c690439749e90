"""GPU check: training images/second through transferlab against a plain PyTorch loop, on one CUDA GPU.

For each model (default resnet50 and vit_small at 224 px, synthetic data, full fine-tuning) and each
setting (default: fp32; bf16-mixed + channels_last; bf16-mixed + channels_last + torch.compile), the
transferlab arm runs a real `Trainer.fit` of a `TransferModule` built from the composed `trainer=gpu`
config (our strategy, optimizer and scheduler configs), and the plain arm an AdamW loop over the same
backbone and head with the same precision, memory format and compiled backbone. Arms alternate after a
warm-up round (which pays the compilation), `--repeats` times; each run times its steps after
`--warmup-steps`. Peak GPU memory per arm. Then the input pipeline (our data module on generated JPEGs,
decode + RandomResizedCrop + flip + normalize) with 1..N workers against what the GPU consumed.

    .venv/bin/python -m benchmarks.gpu_check            # sized for < 5 min on one GPU (not yet run on one)
    .venv/bin/python -m benchmarks.gpu_check --device cpu --models test_resnet --image-size 32 ...

Without CUDA (and without --device cpu) it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch

from benchmarks.common import compose_run, emit, interleaved, ratio, spread, workdir

MODELS = {"resnet50": "resnet50", "vit_small": "vit_small_patch16_224"}
TOKENS = {"fp32", "bf16", "cl", "compile"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--models", default="resnet50,vit_small", help="names or timm models, comma-separated"
    )
    parser.add_argument(
        "--settings", default="fp32,bf16+cl,bf16+cl+compile", help="'+'-joined: fp32|bf16, cl, compile"
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=25, help="steps per run, warm-up steps included")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--workers", default="", help="input-pipeline worker counts (default 1,2,4,.. up to the cores)"
    )
    parser.add_argument("--images", type=int, default=3072, help="generated JPEGs for the input pipeline")
    parser.add_argument("--pipeline-batches", type=int, default=30)
    parser.add_argument("--budget-seconds", type=float, default=200, help="no new model/setting after this")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup_steps < args.steps:
        parser.error(f"--warmup-steps={args.warmup_steps} must be below --steps={args.steps}")
    args.settings = [parse_setting(s) for s in args.settings.split(",")]
    cores = os.cpu_count() or 1
    default = sorted({*(2**i for i in range(8) if 2**i <= cores), cores})
    args.workers = [int(w) for w in args.workers.split(",")] if args.workers else default
    return args


def parse_setting(spec: str) -> dict:
    tokens = set(spec.split("+"))
    if not tokens <= TOKENS or {"fp32", "bf16"} <= tokens:
        raise SystemExit(
            f"--settings: {spec!r} is not a '+'-joined set of fp32|bf16, cl, compile; e.g. bf16+cl+compile"
        )
    return {
        "name": spec,
        "precision": "bf16-mixed" if "bf16" in tokens else "32-true",
        "channels_last": "cl" in tokens,
        "compile": "compile" in tokens,
    }


class Batches:
    """The same synthetic batch `steps` times (pinned on CUDA): the arms measure the model, not the data."""

    def __init__(self, batch_size: int, size: int, steps: int, channels_last: bool, device: str):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, 3, size, size, generator=generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch_size,), generator=generator)
        self.batch = (x.pin_memory(), y.pin_memory()) if device == "cuda" else (x, y)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return (self.batch for _ in range(self.steps))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def start_memory(device: str) -> None:
    """Free what the other arm left (its optimizer state) before the peak is measured anew."""
    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def compose(args: argparse.Namespace, model: str, setting: dict):
    """The config `python -m transferlab.train` would run for this model and setting."""
    trainer = "gpu" if args.device == "cuda" else "cpu"
    return compose_run(
        workdir(),
        [
            f"trainer={trainer}",
            f"trainer.precision={setting['precision']}",
            "strategy=full",
            f"backbone.name={model}",
            "backbone.pretrained=false",
            f"dataset.image_size={args.image_size}",
        ],
    )


def build_module(cfg, setting: dict):
    """A TransferModule as the job builds it (backbone, strategy, optimizer, scheduler from the config)."""
    from hydra.utils import instantiate

    from transferlab.core.config import without_search_space
    from transferlab.module import TransferModule

    backbone = instantiate(cfg.backbone, pretrained=False, _convert_="all")
    module = TransferModule(
        backbone,
        instantiate(without_search_space(cfg.strategy)),
        num_classes=10,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    if setting["channels_last"]:
        module.to(memory_format=torch.channels_last)
    if setting["compile"]:
        module.backbone.compile()  # in place: both arms call the same compiled backbone
    return module


def step_timer(warmup: int, steps: int, device: str, times: dict):
    """A callback noting the time when the first timed step starts and the last one ends."""
    import pytorch_lightning as pl

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                sync(device)
                times["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == steps - 1:
                sync(device)
                times["end"] = time.perf_counter()

    return StepTimer()


def transferlab_arm(cfg, module, batches: Batches, args: argparse.Namespace) -> dict:
    """One `Trainer.fit` through the composed trainer config (no logger, checkpoints or validation)."""
    from hydra.utils import instantiate

    times: dict = {}
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[step_timer(args.warmup_steps, batches.steps, args.device, times)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        max_epochs=1,
        max_steps=batches.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    start_memory(args.device)
    trainer.fit(module, train_dataloaders=batches)
    timed = (batches.steps - args.warmup_steps) * len(batches.batch[1])
    return {
        "images_per_second": timed / (times["end"] - times["start"]),
        "peak_memory_mb": peak_memory_mb(args.device),
    }


def plain_arm(cfg, module, batches: Batches, setting: dict, args: argparse.Namespace) -> dict:
    """The same backbone and head in a bare loop: autocast, AdamW from the optimizer config, no metrics."""
    from hydra.utils import instantiate

    model = torch.nn.Sequential(module.backbone, module.head).to(args.device).train()
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=setting["precision"] == "bf16-mixed")
    start_memory(args.device)
    for step, (x, y) in enumerate(batches):
        if step == args.warmup_steps:
            sync(args.device)
            start = time.perf_counter()
        x, y = x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    sync(args.device)
    timed = (batches.steps - args.warmup_steps) * len(batches.batch[1])
    return {
        "images_per_second": timed / (time.perf_counter() - start),
        "peak_memory_mb": peak_memory_mb(args.device),
    }


def measure(args: argparse.Namespace, model: str, setting: dict) -> dict:
    """Both arms for one model and setting, interleaved after a warm-up round."""
    cfg = compose(args, model, setting)
    module = build_module(cfg, setting)
    batches = Batches(args.batch_size, args.image_size, args.steps, setting["channels_last"], args.device)
    start = time.perf_counter()
    runs = interleaved(
        {
            "plain": lambda: plain_arm(cfg, module, batches, setting, args),
            "transferlab": lambda: transferlab_arm(cfg, module, batches, args),
        },
        repeats=args.repeats,
    )
    rates = {arm: [r["images_per_second"] for r in results] for arm, results in runs.items()}
    result = {
        arm: {
            "images_per_second": spread(rates[arm]),
            "peak_memory_mb": max((r["peak_memory_mb"] or 0) for r in results) or None,
        }
        for arm, results in runs.items()
    }
    result["ratio_transferlab_over_plain"] = ratio(rates["transferlab"], rates["plain"])
    result["seconds"] = round(time.perf_counter() - start, 1)  # the warm-up round (compilation) included
    return result


def input_pipeline(args: argparse.Namespace, consumed: float) -> dict:
    """Our data module's training loader with each worker count, against what the GPU consumed."""
    from hydra.utils import instantiate

    from benchmarks.images import IMAGENET_MEAN, IMAGENET_STD, loader_rate, write_jpeg_folder

    root = write_jpeg_folder(workdir() / "jpegs", args.images, args.image_size)
    rates = {}
    for workers in args.workers:
        cfg = compose_run(
            root / "run",
            ["dataset=image_folder", f"dataset.root={root}", f"dataset.image_size={args.image_size}",
             f"dataset.batch_size={min(args.batch_size, 64)}", f"dataset.num_workers={workers}",
             "dataset.persistent_workers=false", f"dataset.pin_memory={args.device == 'cuda'}",
             "dataset.verify=none", "dataset.hash=stat", f"dataset.manifest_dir={root / 'manifests'}",
             "dataset.val_fraction=0.05", "dataset.augment.zoom=[0.08,1.0]"]
        )  # fmt: skip
        data = instantiate(
            cfg.dataset, data_config={"mean": IMAGENET_MEAN, "std": IMAGENET_STD}, _convert_="all"
        )
        data.setup("fit")
        rates[workers] = loader_rate(data.train_dataloader(), args.pipeline_batches)["images_per_second"]
    best = max(rates.values())
    return {
        "jpeg_size": args.image_size,
        "images_per_second_by_workers": {w: round(r, 1) for w, r in rates.items()},
        "per_worker": {w: round(r / w, 1) for w, r in rates.items()},
        "gpu_consumes_images_per_second": round(consumed, 1),
        "best_over_gpu": round(best / consumed, 3) if consumed else None,
        "workers_needed_estimate": round(consumed / (rates[args.workers[0]] / args.workers[0]), 1)
        if consumed
        else None,
    }


def measure_all(args: argparse.Namespace, start: float) -> dict:
    """Every model and setting, in order; those that would start after `--budget-seconds` are skipped
    (and say so), so the command ends in time whatever the compiler takes."""
    models: dict = {}
    for name in args.models.split(","):
        timm_name = MODELS.get(name, name)
        models[name] = {"timm_name": timm_name}
        for setting in args.settings:
            if time.perf_counter() - start > args.budget_seconds:
                models[name][setting["name"]] = {"skipped": f"--budget-seconds={args.budget_seconds} spent"}
                continue
            models[name][setting["name"]] = measure(args, timm_name, setting)
    return models


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU here (torch {torch.__version__}, CUDA build {torch.version.cuda}); nothing "
            "measured. Run it on a machine with one (or pass --device cpu for a smoke run)."
        )
        return
    start = time.perf_counter()
    models = measure_all(args, start)
    rates = [
        r["transferlab"]["images_per_second"]["median"]
        for m in models.values()
        for r in m.values()
        if isinstance(r, dict) and "plain" in r  # measured, not skipped
    ]
    consumed = max(rates, default=0.0)
    result = {
        "benchmark": "gpu_check",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "repeats": args.repeats,
        "settings": args.settings,
        "models": models,
    }
    result["input_pipeline"] = input_pipeline(args, consumed)
    result["seconds"] = round(time.perf_counter() - start, 1)
    emit(result)


if __name__ == "__main__":
    sys.exit(main())
