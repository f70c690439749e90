"""Secrets never reach a config: the one guard, before anything is written.

Anything that enters the config is written out by someone: Hydra (`.hydra/*.yaml`, the output path),
Lightning (checkpoint hyperparameters), W&B (group, name, tags), our logs and `results.json`. So rather than
redacting every writer after the fact, a secret is refused where it would enter:

- `${oc.env:NAME}` with a secret-looking NAME (`*API_KEY*`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, ...) fails
  to resolve, naming the variable (OmegaConf's `oc.env` resolver is replaced by a guarded one);
- a command-line override whose text holds the value of such a variable is refused by the pre-flight.

Libraries read their credentials from the environment themselves (W&B reads `WANDB_API_KEY`), so no config
needs them. `redact` stays as the second line for records (`results.json`, `config.yaml`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from transferlab.core.errors import TransferlabError

SECRET_MARKERS = ("API_KEY", "APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE_KEY")
_MIN_SECRET = 6  # shorter values are too common to look for in text


def is_secret_name(name: str) -> bool:
    """Whether an environment variable or config key name looks like it holds a secret."""
    upper = str(name).upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def secret_values() -> dict[str, str]:
    """The values of this process's secret-looking environment variables, by name."""
    return {k: v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= _MIN_SECRET}


_MISSING = object()


def guarded_env(key: str, default: Any = _MISSING) -> str | None:
    """`oc.env` that refuses a secret-looking variable (what it resolves into may be written to disk)."""
    if is_secret_name(key):
        raise TransferlabError(
            f"${{oc.env:{key}}}: {key} looks like a secret, and config values are written to disk (output "
            "paths, .hydra/, checkpoints, W&B names, logs); transferlab refuses to interpolate it. Leave it "
            "in the environment: W&B and the hubs read their keys from there themselves."
        )
    if key in os.environ:
        return os.environ[key]
    if default is _MISSING:
        raise KeyError(f"Environment variable '{key}' not found")
    return str(default) if default is not None else None


def install_env_guard() -> None:
    """Replace OmegaConf's `oc.env` resolver by `guarded_env` (idempotent, cheap)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("oc.env", guarded_env, replace=True, use_cache=False)


def refuse_secrets_in(arguments: Iterable[str]) -> None:
    """Refuse command-line overrides that contain the value of a secret environment variable."""
    secrets = secret_values()
    for argument in arguments:
        for name, value in secrets.items():
            if value in argument:
                key = argument.split("=", 1)[0]
                raise TransferlabError(
                    f"The override for {key} holds the value of ${name}: a config value is written to disk "
                    f"(paths, .hydra/, checkpoints, W&B names, logs); leave {name} in the environment only."
                )


_ENV_INTERPOLATION = re.compile(r"oc\.env:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")


def refuse_secret_interpolations(config: Any, path: str = "") -> None:
    """Refuse `${oc.env:<secret>}` anywhere in an unresolved config (a container from `to_container(resolve=
    False)`), naming the key, before anything resolves it."""
    if isinstance(config, dict):  # Hydra's own node last: it repeats the overrides
        for key, value in sorted(config.items(), key=lambda item: item[0] == "hydra"):
            refuse_secret_interpolations(value, f"{path}.{key}" if path else str(key))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            refuse_secret_interpolations(value, f"{path}[{i}]")
    elif isinstance(config, str):
        for name in _ENV_INTERPOLATION.findall(config):
            if is_secret_name(name):
                raise TransferlabError(
                    f"{path}={config}: {name} looks like a secret, and config values are written to disk (output "
                    "paths, .hydra/, checkpoints, W&B names, logs); transferlab refuses to interpolate it. Leave "
                    "it in the environment: W&B and the hubs read their keys from there themselves."
                )
