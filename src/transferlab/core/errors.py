"""User-facing errors: each message names the bad value, where it came from, and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class TransferlabError(Exception):
    """A mistake in the user's input or environment; printed as one line, without a traceback."""


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean a, b?' for close matches of `value` in `choices`, or ''."""
    choices = list(choices)
    close = difflib.get_close_matches(value, choices, n=n, cutoff=0.6)
    if not close:
        lowered = value.lower()
        close = [c for c in choices if lowered in c.lower()][:n]
    return f" Did you mean {', '.join(close)}?" if close else ""


def instantiate(config, *args, kind: type | tuple[type, ...] | None = None, example: str = "", **kwargs):
    """`hydra.utils.instantiate` that lets a `TransferlabError` through unwrapped (one clear line).

    With `kind`, the `_target_` must be that kind of thing (a subclass, or a factory declared to return
    one), checked before anything is called (`transferlab.core.targets`)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    from transferlab.core import targets

    where = _where(config)
    if kind is not None:
        targets.check_kind(config, kind, where, example or "one of transferlab's own configs")
    try:
        built = hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, TransferlabError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise TransferlabError(_instantiation_message(config, exc)) from exc
    return targets.check_built(built, kind, where) if kind is not None else built


def _where(config: Any) -> str:
    key = config._get_full_key(None) if hasattr(config, "_get_full_key") else ""
    target = config.get("_target_") if hasattr(config, "get") else None
    return key or str(target)


def _instantiation_message(config: Any, exc: Exception) -> str:
    """Which config node could not be built, and why, in one line."""
    target = config.get("_target_") if hasattr(config, "get") else None
    where = _where(config)
    if "Error locating target" in str(exc):
        return (
            f"{where}._target_={target}: no such class or function; check its spelling "
            "(HYDRA_FULL_ERROR=1 shows the import error)."
        )
    cause = exc.__cause__ or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return f"{where} could not be built from its config: {type(cause).__name__}: {' '.join(lines)[:500]}"


class DivergedError(TransferlabError):
    """Training diverged (a non-finite loss, or one far above where it started): `status: diverged`."""

    def __init__(self, message: str, step: int, learning_rate: float, loss: float) -> None:
        super().__init__(message)
        self.details = {"step": step, "learning_rate": learning_rate, "loss": loss}


class TrialPruned(Exception):
    """The tuner's pruner stopped this trial early: recorded as `status: pruned`, not as a failure."""


def asked_for_help(argv: list[str], usage: str) -> bool:
    """For console scripts whose arguments are Hydra overrides: print `usage` for -h/--help."""
    if any(a in ("-h", "--help") for a in argv):
        print(usage.strip())
        return True
    return False
