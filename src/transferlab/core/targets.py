"""What may be instantiated: the one rule.

A `_target_` is code to run, so it may come only from configs (ours, the user's `--config-dir`, the command
line), never from a data file (a study journal, a results.json, an exported run's metadata). A config's
`_target_` must also be the kind of thing its key is for (an optimizer class for `optimizer`, a Lightning
callback for `callbacks.*`, ...): a wrong one is refused before it is called, in one line.
A node read from a data file may name only targets from a fixed table of our own (`check_data_node`).
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from typing import Any

from transferlab.core.errors import TransferlabError

TARGET = "_target_"


def locate(target: str, where: str) -> Any:
    """The object `target` names (Hydra's own lookup), or a one-line error naming `where`."""
    from hydra._internal.utils import _locate

    try:
        return _locate(target)
    except Exception as exc:
        cause = exc.__cause__
        if cause is not None and not _names_missing_part(cause, target):  # the module exists but fails
            first = (str(cause).strip().splitlines() or [""])[0]
            raise TransferlabError(
                f"{where}._target_={target}: importing it failed ({type(cause).__name__}: {first}); fix "
                "that module or install what it imports (HYDRA_FULL_ERROR=1 shows the traceback)."
            ) from None
        raise TransferlabError(
            f"{where}._target_={target}: no such class or function; check its spelling "
            "(HYDRA_FULL_ERROR=1 shows the import error)."
        ) from None


def _names_missing_part(error: BaseException, target: str) -> bool:
    """Whether an import `error` says a part of `target` itself is missing (a typo), rather than
    something the named module imports."""
    missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    return bool(missing) and (target == missing or target.startswith(f"{missing}."))


def check_kind(config: Any, kind: type | tuple[type, ...], where: str, example: str) -> None:
    """Refuse, before anything is called, a `_target_` that is not `kind`: a subclass of it, or a factory
    function whose return annotation is one."""
    target = config.get(TARGET) if hasattr(config, "get") else None
    if not target:
        return
    obj = locate(str(target), where)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = " or ".join(f"{k.__module__}.{k.__qualname__}" for k in kinds)
    if inspect.isclass(obj):
        if issubclass(obj, kinds):
            return
        got = f"the class {obj.__module__}.{obj.__qualname__}"
    elif callable(obj):
        returns = _return_type(obj)
        if inspect.isclass(returns) and issubclass(returns, kinds):
            return
        got = "a function that does not declare it returns one"
    else:
        got = f"a {type(obj).__name__}"
    raise TransferlabError(f"{where}._target_={target} is {got}, not a {names}; use e.g. {example}.")


def check_built(obj: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """What a factory returned must be `kind` too."""
    if callable(obj) and not inspect.isclass(obj) and hasattr(obj, "func"):  # _partial_: checked at call
        return obj
    if not isinstance(obj, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise TransferlabError(
            f"{where} built a {type(obj).__name__}, not a {' or '.join(k.__name__ for k in kinds)}."
        )
    return obj


def _return_type(function: Any) -> Any:
    try:
        return typing.get_type_hints(function).get("return")
    except Exception:
        return None


def check_data_node(node: Any, allowed: set[str] | frozenset[str], where: str) -> None:
    """A config read from a data file (e.g. an exported run's dataset config) may name only `allowed`
    targets, at any depth: anything else is refused, naming the file."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == TARGET and value not in allowed:
                raise TransferlabError(
                    f"{where} names _target_={value!r}, which transferlab does not build from a data file "
                    f"(allowed: {', '.join(sorted(allowed))}); the file was not written by transferlab."
                )
            check_data_node(value, allowed, where)
    elif isinstance(node, list):
        for value in node:
            check_data_node(value, allowed, where)


def packaged_targets(group: str) -> frozenset[str]:
    """Every `_target_` that transferlab's own configs of `group` name (e.g. the dataset classes): the
    only ones a data file may ask for."""
    from importlib import resources

    import yaml

    found: set[str] = set()
    for entry in (resources.files("transferlab.conf") / group).iterdir():
        if entry.name.endswith(".yaml"):
            _collect(yaml.safe_load(entry.read_text()), found)
    return frozenset(found)


def packaged_name(cls: type, group: str) -> str:
    """The `name` that transferlab's own config of `group` building `cls` gives it (a user's class built
    without a config: its class name in snake_case)."""
    return (
        _packaged_names(group).get(f"{cls.__module__}.{cls.__qualname__}")
        or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls.__name__).lower()
    )


@functools.cache
def _packaged_names(group: str) -> dict[str, str]:
    """Class path -> name, from every config of `group` (each `_target_` located: our own classes)."""
    from importlib import resources

    import yaml

    names = {}
    for entry in (resources.files("transferlab.conf") / group).iterdir():
        if entry.name.endswith(".yaml"):
            node = yaml.safe_load(entry.read_text()) or {}
            if isinstance(node.get(TARGET), str) and isinstance(node.get("name"), str):
                obj = locate(node[TARGET], group)
                names.setdefault(f"{obj.__module__}.{obj.__qualname__}", node["name"])
    return names


def _collect(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == TARGET and isinstance(value, str):
                found.add(value)
            _collect(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect(value, found)
