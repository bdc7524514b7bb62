"""Name -> reward class registry, so a config string selects a reward."""

from __future__ import annotations

from collections.abc import Callable
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
