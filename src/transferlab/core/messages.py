"""pydantic's validation errors as config mistakes: one line per key, naming the key, the value given and
what the key allows (`optimizer.lr=-1: must be > 0.0.`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf


def lines(
    errors: list[dict[str, Any]],
    data: dict[str, Any],
    cfg: DictConfig,
    prefix: Sequence[str] = (),
    note: str = "",
) -> list[str]:
    """One line per key of pydantic's `errors` (`ValidationError.errors()`): a union's several complaints
    about one value become one sentence. `data` is what
    was validated, found in the config at `prefix`; `note` ends each line (e.g. who declares the key)."""
    found: dict[str, tuple[Any, list[str]]] = {}
    for error in errors:
        path, value, too_short = _key_path(error["loc"], data)
        message = "has too few values" if too_short and error["type"] == "missing" else _explain(error)
        found.setdefault(".".join(map(str, [*prefix, *path])), (value, []))[1].append(message)
    out = []
    for key, (value, messages) in found.items():
        if len(found) > 1 and _interpolated(cfg, key):
            continue  # e.g. dataset.seed=${seed}: the key it copies is named already
        distinct = list(dict.fromkeys(messages))
        if "must be a number" in distinct and "must be a whole number" in distinct:
            distinct.remove("must be a whole number")
        message = "must be " + " or ".join(m.removeprefix("must be ") for m in distinct)
        message = message if all(m.startswith("must be ") for m in distinct) else "; ".join(distinct)
        if message.startswith("dataset.image_size="):  # the relation's own sentence names the keys
            out.append(message + ".")
            continue
        shown = "" if isinstance(value, dict) else f"={show(value)}"
        out.append(f"{key}{shown}: {message}{note}.")
    return out


def _key_path(loc: tuple, data: dict[str, Any]) -> tuple[list, Any, bool]:
    """The config key an error is about (pydantic adds union member names to `loc`), its value, and
    whether the location points past the end of a list (too few values)."""
    path, value = [], data
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list | tuple) and isinstance(part, int):
            if part >= len(value):
                return path, value, True
            value = value[part]
        else:
            break
        path.append(part)
    return path, value, False


def _interpolated(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    try:
        return isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, leaf)
    except Exception:
        return False


def _explain(error: dict[str, Any]) -> str:
    """pydantic's message in the words of a config: what the key allows."""
    kind, ctx = error["type"], error.get("ctx") or {}
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "missing":
        return "is required"
    if kind in ("string_type", "string_parsing"):
        return "must be text"
    message = error["msg"].removeprefix("Value error, ")
    return message[0].lower() + message[1:]


def show(value: Any) -> str:
    """A value as the command line writes it."""
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)
