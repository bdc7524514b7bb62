"""Model adapters: one file per family, each turning a diffusers pipeline into a uniform velocity policy.

Importing this package registers every family shipped with genrl (see :mod:`genrl.models.base`).
"""

from __future__ import annotations

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
from .qwen_image_edit import QwenEditConditioning, QwenImageEditAdapter
from .sd3 import Conditioning, SD3Adapter
from .stable_audio import StableAudioAdapter, StableAudioConditioning
from .wan import WanAdapter, WanConditioning

__all__ = ["AUTO_FAMILY", "MEDIA_KINDS", "Conditioning", "FluxAdapter", "FluxConditioning", "FluxKontextAdapter",
           "KontextConditioning", "ModelAdapter", "QwenEditConditioning", "QwenImageEditAdapter",
           "SD3Adapter", "StableAudioAdapter", "StableAudioConditioning", "WanAdapter", "WanConditioning", "adapter_class", "build_adapter", "family_names",
           "family_of_pipeline", "place_module", "register_adapter", "resolve_family",
           "served_family"]
