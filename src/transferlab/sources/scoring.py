"""Score candidate sources on the target's training split: features from the feature cache, the
candidate's own source head for LEEP and NCE, one row per candidate (scores, seconds, cache use)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from transferlab import selection
from transferlab.core.errors import TransferlabError, did_you_mean, instantiate
from transferlab.sources.candidates import Candidate

log = logging.getLogger(__name__)

FEATURE_SCORES = {
    "logme": selection.logme,
    "hscore": selection.hscore,
    "hscore_reg": selection.regularized_hscore,
    "knn": selection.knn_score,
    "linear_probe": selection.linear_probe_score,
}
HEAD_SCORES = {"leep": selection.leep, "nce": selection.nce}
SCORES = ("logme", "leep", "nce", "hscore", "hscore_reg", "knn", "linear_probe")


def check_scores(names: list[str]) -> list[str]:
    """The score names asked for, in order; an unknown one is a one-line error."""
    names = list(names or SCORES)
    for name in names:
        if name not in SCORES:
            raise TransferlabError(
                f"selection.scores has '{name}', which is not a score.{did_you_mean(name, SCORES)} "
                f"Scores: {', '.join(SCORES)}."
            )
    return names


def device_of(cfg: DictConfig) -> str:
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    return "cuda" if torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto") else "cpu"


def target_features(cfg: DictConfig, cand: Candidate) -> tuple[np.ndarray, np.ndarray, dict[str, Any], Any]:
    """The candidate's backbone features of the target's training split (cached), labels, facts, backbone."""
    from transferlab.data.features import CachedFeatures

    with torch.random.fork_rng(devices=[]):  # a random init is the same candidate in every selection
        torch.manual_seed(int(cfg.seed))
        backbone = instantiate(OmegaConf.create(cand.backbone), _convert_="all")
    datamodule = instantiate(cfg.dataset, data_config=backbone.data_config, _convert_="all")
    cache = CachedFeatures(
        datamodule, backbone, Path(cfg.paths.cache_dir).resolve() / "features", device_of(cfg)
    )
    cache.setup()
    features, labels = cache.tensors["train"]
    facts = {
        "num_features": backbone.num_features,
        "train_samples": int(len(labels)),
        "cache": "hit" if "train" in cache.hits else "miss",
        "weights_sha256": backbone.weights.get("sha256"),
    }
    return features.numpy().astype(np.float64), labels.numpy(), facts, backbone


def source_head(cand: Candidate, backbone) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(weight, bias, where from) of the candidate's source classifier over its pooled features: the
    exported `head.safetensors` of a transferlab run, the classifier inside a timm-style weights file, or
    the timm hub model's own; None when it has none."""
    if cand.head_file is not None:
        state, where = load_file(str(cand.head_file)), "export"
        weight, bias = state.get("weight"), state.get("bias")
    else:
        weight, bias, where = _timm_classifier(cand, backbone)
    if weight is None or bias is None or weight.ndim != 2:
        return None
    if weight.shape[1] != backbone.num_features:
        raise TransferlabError(
            f"The source head of candidate {cand.name} ({where}) takes {weight.shape[1]} features, but its "
            f"backbone gives {backbone.num_features}; export the head and backbone from the same model."
        )
    return weight.double().numpy(), bias.double().numpy(), where


def _timm_classifier(cand: Candidate, backbone) -> tuple[Any, Any, str]:
    from transferlab.backbones.weights import EXPORT_WEIGHTS, WEIGHT_SUFFIXES, read_state_dict

    names = (getattr(backbone.model, "pretrained_cfg", None) or {}).get("classifier")
    names = [names] if isinstance(names, str) else list(names or [])
    pretrained = cand.backbone.get("pretrained")
    if not names or pretrained in (False, None):
        return None, None, ""
    if pretrained is True:  # the hub model's own classifier (from the local hub cache)
        import timm

        classifier = timm.create_model(backbone.name, pretrained=True, **(cand.backbone.get("kwargs") or {}))
        state = {f"{names[0]}.{k}": v for k, v in classifier.get_classifier().state_dict().items()}
        where = "timm hub"
    else:
        path = Path(str(pretrained))
        if path.suffix not in WEIGHT_SUFFIXES or path.name == EXPORT_WEIGHTS:
            return None, None, ""
        state, where = read_state_dict(path), "weights file"
    return state.get(f"{names[0]}.weight"), state.get(f"{names[0]}.bias"), where


def source_probs(head: tuple[np.ndarray, np.ndarray, str] | None, features: np.ndarray) -> np.ndarray | None:
    """Softmax of the source head on `features`, or None when there is no head."""
    if head is None:
        return None
    weight, bias, _ = head
    logits = features @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def score_candidate(cfg: DictConfig, cand: Candidate, scores: list[str]) -> dict[str, Any]:
    """One row of `selection.csv` for `cand`."""
    started = time.perf_counter()
    features, labels, facts, backbone = target_features(cfg, cand)
    feature_seconds = time.perf_counter() - started
    head = source_head(cand, backbone)
    probs = source_probs(head, features)
    row: dict[str, Any] = {"candidate": cand.name}
    notes = []
    scoring_started = time.perf_counter()
    for name in scores:
        try:
            if name in HEAD_SCORES:
                arg = probs if name == "leep" or probs is None else probs.argmax(axis=1)
                row[name] = HEAD_SCORES[name](arg, labels)
            else:
                row[name] = FEATURE_SCORES[name](features, labels)
        except selection.NoHeadError:
            row[name] = math.nan
            if "no head" not in " ".join(notes):
                notes.append("no head: LEEP/NCE need the source classifier")
        except ValueError as exc:  # too few images for this score (e.g. k-NN with one per class)
            row[name] = math.nan
            notes.append(f"{name}: {exc}")
    row.update(
        source_acc=cand.source_acc,
        has_head=probs is not None,
        head=head[2] if head else "",
        **facts,
        feature_seconds=round(feature_seconds, 3),
        score_seconds=round(time.perf_counter() - scoring_started, 3),
        seconds=round(time.perf_counter() - started, 3),
        note="; ".join(notes),
    )
    log.info("Scored %s: %s", cand.name, {k: row[k] for k in scores})
    return row
