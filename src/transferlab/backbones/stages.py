"""Ordered backbone stages (stem first, head excluded) for timm and built-in models.

Sources, in order: timm's `group_matcher(coarse=True)`; else the model's `feature_info` (the modules
timm taps for feature maps); else its top-level children. A group without weights of its own (only
norms, scalars or no parameters at all) is merged into its neighbour, and names are made unique.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


@dataclass(frozen=True)
class Stage:
    """An ordered group of backbone parameters, named after the modules it holds."""

    name: str
    param_names: tuple[str, ...]

    def modules(self) -> list[str]:
        """Owning module names (one level below the top, e.g. `layer1.0`), in order, without repeats."""
        seen: dict[str, None] = {}
        for name in self.param_names:
            parts = name.split(".")
            owner = parts[:-1] or parts
            seen.setdefault(".".join(owner[:2]))
        return list(seen)


def is_norm(module: nn.Module) -> bool:
    """A normalization layer: torch's, or any class named like one (timm's LayerNorm2d, RmsNorm, ...)."""
    return isinstance(module, NORM_TYPES) or "Norm" in type(module).__name__


def _common_prefix(names: list[str]) -> list[str]:
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    # Never name a stage after a single parameter (e.g. `bias`).
    if common and len(common) == len(parts[0]):
        common = common[:-1]
    return common


def _stage_name(index: int, names: list[str]) -> str:
    common = _common_prefix(names)
    if common:
        return ".".join(common)
    if index == 0:
        return "stem"
    tops: dict[str, None] = {}
    for p in (n.split(".") for n in names):
        tops.setdefault(".".join(p[:2]) if len(p) > 2 else p[0])
    keys = list(tops)
    return "+".join(keys) if len(keys) <= 2 else f"{keys[0]}..{keys[-1]}"


def _distinct_name(names: list[str]) -> str:
    """A longer name for a stage whose short one repeats: the prefix and its first..last child."""
    common = _common_prefix(names)
    depth = len(common)
    children: dict[str, None] = {}
    for n in names:
        parts = n.split(".")
        children.setdefault(parts[depth] if len(parts) > depth + 1 else "")
    kids = [c for c in children if c]
    if not kids:
        return ".".join(common)
    tail = (
        kids[0]
        if len(kids) == 1
        else (f"{kids[0]}+{kids[1]}" if len(kids) == 2 else f"{kids[0]}..{kids[-1]}")
    )
    return ".".join([*common, tail])


def _unique_names(groups: list[list[str]]) -> list[str]:
    names = [_stage_name(i, g) for i, g in enumerate(groups)]
    for name in {n for n in names if names.count(n) > 1}:
        for i in [i for i, n in enumerate(names) if n == name]:
            names[i] = _distinct_name(groups[i])
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # last resort: number the repeats
        if counts[name] > 1:
            seen[name] = seen.get(name, 0) + 1
            names[i] = f"{name}#{seen[name]}"
    return names


def _owner(model: nn.Module, param_name: str) -> nn.Module:
    owner = param_name.rsplit(".", 1)[0] if "." in param_name else ""
    return model.get_submodule(owner)


def has_weights(model: nn.Module, names: list[str]) -> bool:
    """True when a group holds a weight matrix or kernel of a layer that is not a norm (a conv, a
    linear, an embedding, a position table): what makes a group a stage rather than a norm."""
    params = dict(model.named_parameters())
    return any(params[n].ndim >= 2 and not is_norm(_owner(model, n)) for n in names)


def _head_prefix(model: nn.Module) -> str | None:
    """The module holding timm's classifier (e.g. `head` for `head.fc`), None when it is the model."""
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(classifier, list | tuple):
        classifier = classifier[0] if classifier else None
    if not isinstance(classifier, str) or "." not in classifier:
        return None
    return classifier.rsplit(".", 1)[0]


def _merge_weightless(model: nn.Module, groups: list[list[str]]) -> list[list[str]]:
    """Join every group without weights of its own, or inside the head module (a pre-logits norm or
    conv that timm keeps when the classifier is removed), to the group before it (the first: to the
    next)."""
    groups = [list(g) for g in groups if g]
    head = _head_prefix(model)
    merged: list[list[str]] = []
    pending: list[str] = []  # weightless groups before the first real one
    for group in groups:
        in_head = head is not None and all(_under(n, head) for n in group)
        if has_weights(model, group) and not (in_head and merged):
            merged.append(pending + group)
            pending = []
        elif merged:
            merged[-1].extend(group)
        else:
            pending.extend(group)
    if pending:  # no group has weights at all: one stage
        merged.append(pending)
    return merged


def _matcher_groups(model: nn.Module) -> list[list[str]]:
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=True))
    return [list(v) for v in groups.values()]


def _under(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _feature_info_groups(model: nn.Module) -> list[list[str]]:
    """One group per module timm taps for features; parameters before the first join a stem group,
    those between taps follow the tap before them, those after the last form a trailing group."""
    taps = list(dict.fromkeys(str(f["module"]) for f in model.feature_info if f.get("module")))
    groups: list[list[str]] = [[] for _ in range(len(taps) + 2)]
    current = 0
    for name, _ in model.named_parameters():
        tap = next((i for i, m in enumerate(taps) if _under(name, m)), None)
        if tap is not None:
            current = tap + 1
        elif current == len(taps):  # past the last tap: head-side parameters
            current = len(taps) + 1
        groups[current].append(name)
    return groups


def _children_groups(model: nn.Module) -> list[list[str]]:
    """The top-level children in order (descending while one child holds every parameter, and a
    Sequential or ModuleList child split into its children); the model's own parameters (position
    tables, class tokens) join the first group."""
    prefix, module = "", model
    while True:
        holders = [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if len(holders) == 1 and not own:
            prefix, module = f"{prefix}{holders[0][0]}.", holders[0][1]
            continue
        break
    expanded = []
    for n, child in holders:  # a Sequential/ModuleList of stages (PiT's `transformers`): one each
        parts = [(f"{n}.{k}", c) for k, c in child.named_children() if any(True for _ in c.parameters())]
        own_params = any(True for _ in child.parameters(recurse=False))
        is_list = isinstance(child, nn.Sequential | nn.ModuleList)
        expanded += parts if is_list and len(parts) > 1 and not own_params else [(n, child)]
    groups = [[f"{prefix}{n}.{p}" for p, _ in child.named_parameters()] for n, child in expanded]
    own_names = [f"{prefix}{n}" for n in own]
    return [own_names + groups[0], *groups[1:]] if groups else [own_names]


def timm_stages(model: nn.Module) -> tuple[list[Stage], str]:
    """Stages of a timm model and where they came from (`group_matcher`, `feature_info` or
    `top-level children`); weightless groups are merged into their neighbour, names are unique."""
    groups = None
    if hasattr(model, "group_matcher"):
        try:
            source, groups = "group_matcher", _matcher_groups(model)
        except Exception:  # e.g. RDNet: "coarse grouping is not implemented"
            groups = None
    if groups is not None:
        pass
    elif getattr(model, "feature_info", None):
        source, groups = "feature_info", _feature_info_groups(model)
    else:
        source, groups = "top-level children", _children_groups(model)
    staged = {n for g in groups for n in g}
    rest = [n for n, _ in model.named_parameters() if n not in staged]
    if rest and groups:  # parameters no rule matched follow the last group
        groups[-1] = [*groups[-1], *rest]
    groups = _merge_weightless(model, groups)
    return [Stage(n, tuple(g)) for n, g in zip(_unique_names(groups), groups, strict=True)], source


def declared_stages(model: nn.Module, stage_names: tuple[str, ...]) -> list[Stage]:
    """Stages of a built-in model that declares its top-level stage modules in order."""
    stages = []
    for name in stage_names:
        params = tuple(f"{name}.{p}" for p, _ in getattr(model, name).named_parameters())
        stages.append(Stage(name, params))
    return stages
