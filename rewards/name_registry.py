"""A name -> class registry, shared by rewards and algorithms so a config string selects a part."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes registered under names; ``kind`` names what they are in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering a class under ``name`` (and setting its ``name`` attribute)."""
        def wrap(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._classes[name] = cls
            cls.name = name
            return cls
        return wrap

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._classes)

    def build(self, name: str, *args: Any, hint: str = "", **kwargs: Any) -> T:
        """Instantiate the class registered as ``name``; an unknown name lists the available ones."""
        if name not in self._classes:
            raise KeyError(f"unknown {self.kind} {name!r}{hint}; available: {self.names()}")
        return self._classes[name](*args, **kwargs)
