"""Candidate sources in one list: timm names (hub weights), weight files, run directories, `random`,
and the members of the offline source zoo (`zoo`, `zoo:<member>`).

A candidate resolves to the `backbone` config that builds it (architecture, kwargs, `pretrained`) and,
when its export holds one, the source classifier (`head.safetensors`) that LEEP and NCE need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.backbones.weights import EXPORT_META, EXPORT_WEIGHTS, WEIGHT_SUFFIXES
from transferlab.core.errors import TransferlabError
from transferlab.core.targets import check_data_node

RANDOM = "random"
ZOO = "zoo"
HEAD_FILE = "head.safetensors"  # what every transferlab run exports beside its backbone


@dataclass
class Candidate:
    """One source to score: its label, how to build it, its source head and source-task accuracy."""

    name: str
    backbone: dict[str, Any]
    head_file: Path | None = None
    source_acc: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def resolve(specs: list[Any], backbone: DictConfig, zoo=None) -> list[Candidate]:
    """Candidates for `specs` (strings or {name, pretrained, backbone, head} dicts), built on the run's
    `backbone` config; `zoo` is a callable giving {member: run dir} for `zoo` / `zoo:<member>` entries."""
    if not specs:
        raise TransferlabError(
            "selection.candidates is empty; list timm names, weight files, run directories, 'random' or "
            "'zoo', e.g. selection.candidates=[zoo,random]."
        )
    base = OmegaConf.to_container(backbone, resolve=True)
    found: list[Candidate] = []
    for spec in specs:
        spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
        if isinstance(spec, str) and (spec == ZOO or spec.startswith(f"{ZOO}:")):
            found += _zoo(spec, base, zoo)
        else:
            found.append(_one(spec, base))
    names = [c.name for c in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TransferlabError(
            f"selection.candidates names {', '.join(twice)} more than once; give each a distinct name "
            "({name: NAME, pretrained: PATH})."
        )
    return found


def _one(spec: Any, base: dict[str, Any]) -> Candidate:
    if isinstance(spec, dict):
        if "pretrained" not in spec:
            raise TransferlabError(
                f"selection.candidates entry {spec} has no 'pretrained' (a path, a timm name with "
                "pretrained: true under backbone, or false)."
            )
        name = str(spec.get("name") or spec["pretrained"])
        cand = _from_pretrained(spec["pretrained"], {**base, **(spec.get("backbone") or {})}, name)
        if spec.get("head"):
            cand.head_file = Path(spec["head"]).expanduser()
        return cand
    if not isinstance(spec, str):
        raise TransferlabError(f"selection.candidates entry {spec!r} is not a string or a mapping.")
    if spec == RANDOM:
        return Candidate(RANDOM, {**base, "pretrained": False})
    path = Path(spec).expanduser()
    hub = spec.startswith(("hf-hub:", "hf_hub:"))  # a timm name on the Hugging Face hub
    if not hub and (path.exists() or path.suffix in WEIGHT_SUFFIXES or "/" in spec):
        return _from_pretrained(spec, base, _label(path))
    return Candidate(spec, {**base, "name": spec, "pretrained": True, "kwargs": {}})  # a timm hub name


def _label(path: Path) -> str:
    if path.name == EXPORT_WEIGHTS or path.is_dir():
        return path.resolve().parent.name if path.name == EXPORT_WEIGHTS else path.resolve().name
    return path.stem


def _from_pretrained(pretrained: Any, backbone: dict[str, Any], name: str) -> Candidate:
    if pretrained in (False, None, "false", RANDOM):
        return Candidate(name, {**backbone, "pretrained": False})
    if pretrained is True:
        return Candidate(name, {**backbone, "pretrained": True})
    path = Path(str(pretrained)).expanduser()
    if not path.exists():
        raise TransferlabError(
            f"selection.candidates: {pretrained} is no file or directory; give a weights file "
            f"({', '.join(WEIGHT_SUFFIXES)}), a transferlab run directory, a timm name, 'random' or 'zoo'."
        )
    folder = path if path.is_dir() else path.parent
    meta = _read_meta(folder / EXPORT_META) if (path.is_dir() or path.name == EXPORT_WEIGHTS) else {}
    if meta.get("architecture"):
        kwargs = meta.get("kwargs") or {}
        check_data_node(kwargs, frozenset(), f"{folder / EXPORT_META} kwargs")  # they reach instantiate
        backbone = {**backbone, "name": meta["architecture"], "kwargs": kwargs}
    head = folder / meta.get("head_file", HEAD_FILE) if meta else None
    acc = (meta.get("metrics") or {}).get("test/acc")
    return Candidate(
        name,
        {**backbone, "pretrained": str(path.resolve())},
        head_file=head if head is not None and head.is_file() else None,
        source_acc=float(acc) if acc is not None else None,
        meta=meta,
    )


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TransferlabError(f"{path} cannot be read as JSON ({exc}); export the backbone again.") from None


def _zoo(spec: str, base: dict[str, Any], zoo) -> list[Candidate]:
    if zoo is None:
        raise TransferlabError(f"selection.candidates has '{spec}', but no source zoo is configured.")
    members: dict[str, Path | None] = zoo()
    wanted = list(members) if spec == ZOO else [spec.split(":", 1)[1]]
    unknown = [w for w in wanted if w not in members]
    if unknown:
        raise TransferlabError(
            f"selection.candidates: '{spec}' is not a zoo member; members: {', '.join(members)}."
        )
    out = []
    for member in wanted:
        run_dir = members[member]
        cand = _from_pretrained(run_dir if run_dir is not None else False, base, f"{ZOO}:{member}")
        out.append(cand)
    return out
