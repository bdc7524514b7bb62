"""Model adapters: one per family, each turning a diffusers pipeline into a uniform velocity policy."""

from __future__ import annotations

from typing import Any

from .flux import FluxAdapter, FluxConditioning
from .sd3 import Conditioning, SD3Adapter

#: family name -> adapter class
ADAPTERS: dict[str, type] = {"sd3": SD3Adapter, "flux": FluxAdapter}


def build_adapter(family: str, pipe: Any, **options: Any):
    """The adapter of ``family`` (``"sd3"`` or ``"flux"``) around a loaded pipeline."""
    if family not in ADAPTERS:
        raise KeyError(f"unknown model family {family!r}; available: {sorted(ADAPTERS)}")
    return ADAPTERS[family](pipe, **options)


__all__ = ["ADAPTERS", "Conditioning", "FluxAdapter", "FluxConditioning", "SD3Adapter", "build_adapter"]
