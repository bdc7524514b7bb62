"""Name -> reward class registry, so a config string selects a reward."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .base import Reward
from .name_registry import Registry

_REGISTRY: Registry[Reward] = Registry("reward")


def register_reward(name: str) -> Callable[[type[Reward]], type[Reward]]:
    """Class decorator registering a reward under ``name``."""
    return _REGISTRY.register(name)


def _register_all() -> None:
    """Import every reward module of the package, which registers its rewards (the package loads lazily)."""
    import importlib

    from . import REWARD_MODULES

    for module in REWARD_MODULES:
        importlib.import_module(f"rewards.{module}")


def available_rewards() -> list[str]:
    """Names of all registered rewards."""
    _register_all()
    return _REGISTRY.names()


def build_reward(name: str, **options: Any) -> Reward:
    """Instantiate the reward registered as ``name`` with keyword options."""
    _register_all()
    return _REGISTRY.build(name, **options)


def build_reward_spec(spec: Reward | Mapping[str, Any], owner: str) -> Reward:
    """A reward given as itself, or (from a config) as a mapping ``{name, options}``; ``owner`` names the option
    holding it in the error for anything else."""
    if isinstance(spec, Reward):
        return spec
    if not isinstance(spec, Mapping) or "name" not in spec or set(spec) - {"name", "options"}:
        raise ValueError(f"{owner} must be a reward or a mapping {{name, options}}, got {spec!r}")
    return build_reward(spec["name"], **dict(spec.get("options") or {}))


class RewardPool:
    """Rewards built once per name and options, so a training term and an evaluation metric with the same
    settings share one loaded model (and a learning reward one state)."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str], Reward] = {}

    def build(self, name: str, **options: Any) -> Reward:
        """The reward ``name`` with ``options``, built on first request."""
        key = (name, json.dumps(options, sort_keys=True, default=repr))
        if key not in self._built:
            self._built[key] = build_reward(name, **options)
        return self._built[key]

    def __len__(self) -> int:
        return len(self._built)
