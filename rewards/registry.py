"""Name -> reward class registry, so a config string selects a reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Reward

_REGISTRY: dict[str, type[Reward]] = {}


def register_reward(name: str) -> Callable[[type[Reward]], type[Reward]]:
    """Class decorator registering a reward under ``name``."""
    def wrap(cls: type[Reward]) -> type[Reward]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a reward named {name!r} is already registered")
        _REGISTRY[name] = cls
        cls.name = name
        return cls
    return wrap


def available_rewards() -> list[str]:
    """Names of all registered rewards."""
    return sorted(_REGISTRY)


def build_reward(name: str, **options: Any) -> Reward:
    """Instantiate the reward registered as ``name`` with keyword options."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown reward {name!r}; available: {available_rewards()}")
    return _REGISTRY[name](**options)
