"""Survey of timm's families beyond the zoo test: for one small model per timm module not in
tests/zoo_families.py, build it (at 64 px, or as the size advice says), check its stages, run a
forward/backward and a LoRA export check. One JSON line per module, then a summary line.

python -m benchmarks.zoo_survey            # ~3 min of CPU on 2 cores
"""

from __future__ import annotations

import json
import logging
import re
import time
import warnings

import timm
import torch

from tests.zoo_families import ZOO
from transferlab.backbones import create_backbone
from transferlab.backbones.stages import has_weights
from transferlab.strategies import LoRA

# Not surveyed: too big for a CPU survey (hundreds of millions of parameters or 300+ px native).
SKIPPED = {
    "deepseek_vit": "412M+ parameters",
    "gemma4_vit": "167M+ parameters",
    "qwen3_vit": "88M+ parameters, LLM vision tower",
    "mobilenetv5": "300M+ parameters",
    "naflexvit": "86M+ parameters",
    "nasnet": "nasnetalarge only (85M, 331 px)",
    "pnasnet": "pnasnet5large only (86M, 331 px)",
    "vision_transformer_sam": "SAM ViT-B (90M, 1024 px)",
    "vgg": "129M parameters (4096-wide pre-logits)",
}
PICK = {"senet": "legacy_seresnet18", "twins": "twins_svt_small", "tresnet": "tresnet_m"}
SMALL = ("test_", "atto", "femto", "pico", "nano", "xxs", "tiny", "mini", "xs", "s0", "b0", "t0", "m0", "s1")
SMALL += ("_s", "small", "050", "100", "18", "26", "34")


def _smallest(module: str) -> str:
    def rank(name: str) -> tuple[int, int]:
        return next((i, len(name)) for i, key in enumerate((*SMALL, "")) if key in name)

    return PICK.get(module) or sorted(timm.list_models(module=module), key=rank)[0]


def _build(name: str) -> tuple:
    """The backbone at 64 px, else at the size and img_size its error advises."""
    try:
        return create_backbone(name, image_size=64), 64, {}
    except Exception as exc:
        kwarg = re.search(r"img_size=(\d+)", str(exc))
        size = re.search(r"use dataset.image_size=(\d+)", str(exc))
        if not (kwarg or size):
            raise
        s = int((kwarg or size).group(1))
        kwargs = {"img_size": s} if kwarg else {}
        return create_backbone(name, image_size=s, kwargs=kwargs), s, kwargs


def survey(module: str) -> dict:
    name, started = _smallest(module), time.perf_counter()
    try:
        backbone, size, kwargs = _build(name)
        names = [s.name for s in backbone.stages]
        stages_ok = len(set(names)) == len(names) and all(
            has_weights(backbone.model, list(s.param_names)) for s in backbone.stages
        )
        backbone.train()
        backbone(torch.randn(2, backbone.in_chans, size, size)).sum().backward()
        lora = LoRA(rank=2)
        lora.prepare(backbone)
        lora.export_model(backbone)  # raises unless the export reproduces the adapted network
        row = {
            "status": "ok",
            "size": size,
            "kwargs": kwargs,
            "stages": len(names),
            "source": backbone.stage_source,
        }
        row |= {"stages_ok": stages_ok, "weight_space_layers": lora.weight_space_layers}
    except Exception as exc:
        row = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return {"module": module, "model": name, **row, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    tested = {f.module for f in ZOO}
    rows = []
    for module in timm.list_modules():
        if module in tested or module in SKIPPED:
            continue
        rows.append(survey(module))
        print(json.dumps(rows[-1]), flush=True)
    ok = [r["module"] for r in rows if r["status"] == "ok" and r["stages_ok"]]
    summary = {"surveyed": len(rows), "ok": len(ok), "failed": [r for r in rows if r["module"] not in ok]}
    print(json.dumps({"summary": summary, "zoo_test_families": len(tested), "skipped": SKIPPED}))


if __name__ == "__main__":
    main()
