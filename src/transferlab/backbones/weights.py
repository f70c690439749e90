"""Loading backbone weights (files, run directories, timm hub) and exporting them."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from transferlab.core.atomic import atomic_open
from transferlab.core.errors import TransferlabError

EXPORT_WEIGHTS = "backbone.safetensors"
EXPORT_META = "backbone.json"
HEAD_FILE = "head.safetensors"  # the run's classifier, beside the exported backbone
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_PREFIXES = ("module.", "model.", "backbone.model.", "backbone.", "_orig_mod.")


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict (order independent)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resolve_weights_path(spec: str | os.PathLike) -> tuple[Path, dict[str, Any] | None]:
    """A weights file, or a transferlab run directory holding an exported backbone; returns (file, meta)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        weights = path / EXPORT_WEIGHTS
        if not weights.is_file():
            raise TransferlabError(
                f"backbone.pretrained={spec} is a directory without {EXPORT_WEIGHTS}; point it at a finished "
                f"transferlab run directory or at a weights file ({', '.join(WEIGHT_SUFFIXES)})."
            )
        meta_path = path / EXPORT_META
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        return weights, meta
    if not path.is_file():
        raise TransferlabError(
            f"backbone.pretrained={spec}: no such file or directory; give a weights file "
            f"({', '.join(WEIGHT_SUFFIXES)}), a transferlab run directory, true (timm hub) or false."
        )
    if path.suffix not in WEIGHT_SUFFIXES:
        raise TransferlabError(
            f"backbone.pretrained={spec}: unsupported weights file type '{path.suffix}'; "
            f"use one of {', '.join(WEIGHT_SUFFIXES)}."
        )
    meta_path = path.with_name(EXPORT_META) if path.name == EXPORT_WEIGHTS else None
    meta = json.loads(meta_path.read_text()) if meta_path and meta_path.is_file() else None
    return path, meta


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file; `.pth`/`.bin` are read with `weights_only=True` (no arbitrary unpickling)."""
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled objects, ...
        raise TransferlabError(
            f"backbone.pretrained={path}: cannot read weights ({_reason(exc)}); transferlab reads tensors only and "
            "never unpickles objects: save a plain state dict with safetensors.torch.save_file or "
            "torch.save(model.state_dict())."
        ) from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TransferlabError(f"backbone.pretrained={path}: the file does not hold a state dict of tensors.")
    return {_strip_prefix(k): v for k, v in state.items()}


def _reason(exc: Exception) -> str:
    """Why a weights file could not be read, without PyTorch's advice to unpickle it anyway."""
    text = str(exc)
    if "weights_only" in text or "Weights only load failed" in text or "Unsupported global" in text:
        return "it holds pickled Python objects, not only tensors"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {first[:160]}"


def _strip_prefix(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> list[str]:
    """Load `state` into `model`; returns the dropped classifier keys. Mismatches are clear errors."""
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception:  # the filter is a convenience (e.g. resizing position embeddings)
            pass
    own = model.state_dict()
    classifier = _classifier_keys(model)
    dropped = [k for k in state if k not in own and k.rsplit(".", 1)[0] in classifier]
    state = {k: v for k, v in state.items() if k not in dropped}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        details = []
        if missing:
            details.append(f"missing keys {_few(missing)}")
        if unexpected:
            details.append(f"unexpected keys {_few(unexpected)}")
        if shape:
            details.append(
                "shape mismatch "
                + _few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape])
            )
        raise TransferlabError(
            f"Weights from {source} do not fit backbone '{arch}': {'; '.join(details)}. "
            "Use weights saved from the same architecture (backbone.name) and kwargs."
        )
    model.load_state_dict(state, strict=True)
    return dropped


def _classifier_keys(model: nn.Module) -> set[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    return {names} if isinstance(names, str) else set(names)


def _few(items: list[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"


def export_backbone(model: nn.Module, out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write `backbone.safetensors` and `backbone.json` atomically; returns the metadata with the sha256."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_open(out_dir / EXPORT_WEIGHTS) as f:
        f.write(save(state))
    meta = {**meta, "weights_file": EXPORT_WEIGHTS, "sha256": file_sha256(out_dir / EXPORT_WEIGHTS)}
    with atomic_open(out_dir / EXPORT_META, "w") as f:
        json.dump(meta, f, indent=2, default=str)
    return meta


def export_head(head: nn.Module, out_dir: Path) -> str:
    """The run's classifier (its Linear layer) as `head.safetensors`, beside the exported backbone."""
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    state = {k: v.detach().cpu().contiguous() for k, v in linear.state_dict().items()}
    with atomic_open(out_dir / HEAD_FILE) as f:
        f.write(save(state))
    return HEAD_FILE
