"""Name -> reward class registry, so a config string selects a reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from genrl.utils.registry import Registry

from .base import Reward

_REGISTRY: Registry[Reward] = Registry("reward")


def register_reward(name: str) -> Callable[[type[Reward]], type[Reward]]:
    """Class decorator registering a reward under ``name``."""
    return _REGISTRY.register(name)


def available_rewards() -> list[str]:
    """Names of all registered rewards."""
    return _REGISTRY.names()


def build_reward(name: str, **options: Any) -> Reward:
    """Instantiate the reward registered as ``name`` with keyword options."""
    return _REGISTRY.build(name, **options)
