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


def target_features(cfg: DictConfig, cand: Candidate) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The candidate's backbone features of the target's training split (cached), labels, and facts."""
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
    return features.numpy().astype(np.float64), labels.numpy(), facts


def source_probs(cand: Candidate, features: np.ndarray) -> np.ndarray | None:
    """Softmax of the candidate's source head on `features`, or None when it has no head."""
    if cand.head_file is None:
        return None
    state = load_file(str(cand.head_file))
    weight, bias = state["weight"].double().numpy(), state["bias"].double().numpy()
    if weight.shape[1] != features.shape[1]:
        raise TransferlabError(
            f"{cand.head_file} is a head over {weight.shape[1]} features, but candidate {cand.name} gives "
            f"{features.shape[1]}; export the head and backbone from the same run."
        )
    logits = features @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def score_candidate(cfg: DictConfig, cand: Candidate, scores: list[str]) -> dict[str, Any]:
    """One row of `selection.csv` for `cand`."""
    started = time.perf_counter()
    features, labels, facts = target_features(cfg, cand)
    feature_seconds = time.perf_counter() - started
    probs = source_probs(cand, features)
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
    row.update(
        source_acc=cand.source_acc,
        has_head=probs is not None,
        **facts,
        feature_seconds=round(feature_seconds, 3),
        score_seconds=round(time.perf_counter() - scoring_started, 3),
        seconds=round(time.perf_counter() - started, 3),
        note="; ".join(notes),
    )
    log.info("Scored %s: %s", cand.name, {k: row[k] for k in scores})
    return row
