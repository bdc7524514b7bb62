"""Model adapters: one file per family, each turning a diffusers pipeline into a uniform velocity policy.

Importing this package registers every family shipped with genrl (see :mod:`genrl.models.base`): each module
of the package is imported, so a new family is one new file here (and its case in the contract test).
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    AUTO_FAMILY,
    MEDIA_KINDS,
    ModelAdapter,
    adapter_class,
    build_adapter,
    family_names,
    family_of_pipeline,
    place_module,
    register_adapter,
    resolve_family,
    served_family,
)
from .flux import FluxAdapter, FluxConditioning
from .flux_kontext import FluxKontextAdapter, KontextConditioning
from .qwen_image_edit import QwenEditConditioning, QwenImageEditAdapter, QwenImageEditPlusAdapter
from .sd3 import Conditioning, SD3Adapter
from .stable_audio import StableAudioAdapter, StableAudioConditioning
from .wan import WanAdapter, WanConditioning

__all__ = ["AUTO_FAMILY", "MEDIA_KINDS", "Conditioning", "FluxAdapter", "FluxConditioning", "FluxKontextAdapter",
           "KontextConditioning", "ModelAdapter", "QwenEditConditioning", "QwenImageEditAdapter",
           "QwenImageEditPlusAdapter", "SD3Adapter", "StableAudioAdapter", "StableAudioConditioning", "WanAdapter",
           "WanConditioning", "adapter_class", "build_adapter", "family_names", "family_of_pipeline", "place_module",
           "register_adapter", "resolve_family", "served_family"]

for _module in pkgutil.iter_modules(__path__):  # a family file not imported above registers itself here
    importlib.import_module(f"{__name__}.{_module.name}")
