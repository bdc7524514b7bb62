"""Lazy imports of optional heavy dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

#: Import name -> (distribution, genrl extra that installs it).
OPTIONAL_PACKAGES: dict[str, tuple[str, str]] = {
    "laion_clap": ("laion-clap", "clap"),
    "xformers": ("xformers", "xformers"),
    "wandb": ("wandb", "wandb"),
    "av": ("av", "video"),
    "cv2": ("opencv-python-headless", "flow"),
    "deepspeed": ("deepspeed", "deepspeed"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed."""


def require(module: str) -> ModuleType:
    """Import an optional module, or raise :class:`MissingExtraError` saying which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        dist, extra = OPTIONAL_PACKAGES.get(module.split(".")[0], (module, None))
        hint = f'pip install -e ".[{extra}]"' if extra else f"pip install {dist}"
        raise MissingExtraError(f"{module!r} is needed for this feature but is not installed; run: {hint}") from err
