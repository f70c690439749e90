"""Each strategy, regularizer and data source declares its own settings beside its class; the config
check finds them through the node's `_target_`, so a user's class in their own module is checked at the
door exactly as ours are, and nothing here lists classes.

A class declares its settings either

- as typed `__init__` arguments (followed up the class hierarchy while an `__init__` passes `**kwargs`
  on), constraints as pydantic's `Annotated[float, Field(gt=0)]`::

      def __init__(self, first_lr_mult: Annotated[float, Field(gt=0)] = 0.1, **kwargs): ...

- or as a pydantic model in a `Settings` class attribute (its `extra="forbid"` refuses unknown keys).

Finding the class imports its module and runs nothing else (`targets.locate`, Hydra's own lookup).
Keys starting with `_` (Hydra's `_target_`, `_partial_`, ...) and `search_space` are not settings.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from transferlab.core import messages, targets
from transferlab.core.errors import did_you_mean

NOT_SETTINGS = ("search_space",)
MAX_LISTED = 12  # settings named in an unknown key's message


@functools.cache
def settings_of(cls: type) -> tuple[type[BaseModel], bool]:
    """The pydantic model of `cls`'s settings (fields aliased by their keys), and whether `cls` also takes
    keys it does not declare."""
    explicit = getattr(cls, "Settings", None)
    if inspect.isclass(explicit) and issubclass(explicit, BaseModel):
        return explicit, explicit.model_config.get("extra") != "forbid"
    fields: dict[str, tuple[Any, Any]] = {}
    open_ = True
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):  # a builtin's __init__: nothing declared
            break
        hints = _hints(init)
        for p in params:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in fields:
                fields[p.name] = (hints.get(p.name, Any), p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            open_ = False
            break
    return _model(cls, fields, open_), open_


def _hints(function: Any) -> dict[str, Any]:
    """The argument annotations, constraints kept (`Annotated`); none if they cannot be resolved."""
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:
        return {}


def _model(cls: type, fields: dict[str, tuple[Any, Any]], open_: bool) -> type[BaseModel]:
    config = ConfigDict(
        extra="allow" if open_ else "ignore",  # unknown keys are named by `check_node`, with suggestions
        arbitrary_types_allowed=True,
        coerce_numbers_to_str=True,
        populate_by_name=False,
    )
    definitions = {}
    for i, (name, (annotation, default)) in enumerate(fields.items()):
        default = ... if default is inspect.Parameter.empty else default
        definitions[f"setting_{i}"] = (annotation, Field(default, alias=name))
    try:
        return create_model(f"{cls.__name__}Settings", __config__=config, **definitions)
    except Exception:  # an annotation pydantic cannot check: that setting is taken as it is
        loose = {k: (Any, info) for k, (_, info) in definitions.items()}
        return create_model(f"{cls.__name__}Settings", __config__=config, **loose)


def declared(cls: type) -> list[str]:
    """The setting keys `cls` declares."""
    model, _ = settings_of(cls)
    return [f.alias or name for name, f in model.model_fields.items()]


def _declared_kind(model: type[BaseModel], key: str) -> tuple[type, ...] | None:
    """The classes a setting's annotation names (`source: DataSource | None` -> DataSource), or None when
    it allows anything (no annotation, `Any`, a dict)."""
    field = next((f for name, f in model.model_fields.items() if (f.alias or name) == key), None)
    if field is None:
        return None
    options = typing.get_args(field.annotation) or (field.annotation,)
    kinds = tuple(a for a in options if isinstance(a, type) and a is not type(None))
    if not kinds or any(typing.get_origin(a) or a in (object, dict) for a in kinds):
        return None
    if len(kinds) != len([a for a in options if a is not type(None)]):
        return None  # a part pydantic cannot name as a class (Any, a generic): not checked
    return kinds


def _name(kinds: tuple[type, ...] | None) -> str:
    return f"{kinds[0].__module__}.{kinds[0].__qualname__}" if kinds else ""


def check_node(
    node: dict[str, Any],
    where: str,
    cfg: DictConfig,
    kind: type | tuple[type, ...] | None = None,
    example: str = "",
    owned: frozenset[str] = frozenset(),
) -> list[str]:
    """The mistakes in the settings of config node `node` (resolved, at key `where`) against what its
    `_target_` declares, one line each; nested nodes with a `_target_` are checked too. `owned` keys are
    checked elsewhere (the group's shared keys). A `_target_` that names nothing, or not a `kind`, raises
    a one-line `TransferlabError`."""
    target = node.get(targets.TARGET)
    cls = targets.locate(target, where) if isinstance(target, str) else None
    if cls is not None and kind is not None:
        targets.check_kind(node, kind, where, example)
    model = settings_of(cls)[0] if inspect.isclass(cls) else None
    found = []
    for key, value in node.items():
        if isinstance(value, dict) and targets.TARGET in value and key not in owned:
            # the kind the class declares for that setting (e.g. `source: DataSource`): checked too
            inner = _declared_kind(model, str(key)) if model is not None else None
            found += check_node(value, f"{where}.{key}", cfg, kind=inner, example=_name(inner))
    if model is None:
        return found  # no target, or a factory function: its arguments are its own business
    open_ = settings_of(cls)[1]
    keys = set(declared(cls))
    nested = {k for k, v in node.items() if isinstance(v, dict) and targets.TARGET in v}
    given = {
        k: v for k, v in node.items() if not str(k).startswith("_") and k not in (*NOT_SETTINGS, *nested)
    }
    note = f" (a setting of {target})"
    if not open_:
        for key in sorted(set(given) - keys - owned):
            hint = did_you_mean(key, keys)
            hint = hint.replace("Did you mean ", f"Did you mean {where}.") if hint else ""
            listed = ", ".join(sorted(keys)[:MAX_LISTED]) + (", ..." if len(keys) > MAX_LISTED else "")
            found.append(f"{where}.{key}: {target} has no such setting.{hint} Its settings: {listed}.")
        given = {k: v for k, v in given.items() if k in keys}
    try:
        model.model_validate(given)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if not (e["loc"] and e["loc"][0] in owned)]
        found += messages.lines(errors, given, cfg, prefix=where.split("."), note=note)
    except Exception as exc:  # a Settings validator that raises other than ValueError: still one line
        first = (str(exc).strip().splitlines() or [""])[0]
        found.append(
            f"{where}: checking the settings of {target} raised {type(exc).__name__}: {first} (a Settings "
            "validator should raise ValueError naming the bad value)."
        )
    return found
