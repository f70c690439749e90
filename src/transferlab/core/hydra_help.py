"""Hydra's `--help` and `--hydra-help` without their cost: one config repository for the listing.

Hydra lists every config group and its options by asking its config loader once per group, and every
question deep-copies the whole config repository (each search-path source and Hydra's ConfigStore):
about 130 copies for our groups, most of a `--help` (hydra `format_config_groups` ->
`get_group_options` -> `CachingConfigRepository`). Within one command nothing changes that repository,
so one copy answers them all: the text is Hydra's own (tests/test_cli.py compares the two).
"""

from __future__ import annotations

from typing import Any

HELP_FLAGS = ("--help", "-h", "--hydra-help")


def wants_help(argv: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def share_one_repository() -> bool:
    """From now on in this process, Hydra's config loader makes one caching repository per (config name,
    overrides) instead of one per question. False (and nothing changed) if this Hydra has no such step."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if original is None:
        return False
    if getattr(original, "shared_by_transferlab", False):
        return True

    def shared(self: Any, config_name: str | None, overrides: list[str]) -> Any:
        made = self.__dict__.setdefault("_transferlab_repositories", {})
        key = (config_name, tuple(overrides))
        if key not in made:
            made[key] = original(self, config_name, overrides)
        return made[key]

    shared.shared_by_transferlab = True  # type: ignore[attr-defined]
    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = shared
    return True
