"""The attention kernel of the denoiser (``model.attention``): torch SDPA, xformers, or a backend of diffusers'
attention dispatcher (``flash``, ``_native_flash``, ``_native_cudnn``, ``_native_efficient``, ``_native_math``,
``flex``, ``sage``, ...) where the family's attention goes through it and the backend's package is installed.

Results are equal up to rounding, so the key may change on resume. Hub-downloaded kernels (``*_hub``) are refused:
they fetch and run code at start-up; install the kernel's package and name its local backend instead.
"""

from __future__ import annotations

import torch

from rewards.optional import require

#: genrl's own names: torch's scaled_dot_product_attention (each processor's default) and xformers' processor
NATIVE_CHOICES = ("sdpa", "xformers")


def dispatched_attention(transformer: torch.nn.Module) -> bool:
    """Whether ``transformer``'s attention processors call diffusers' dispatcher (FLUX, Wan, Qwen-Image do; SD3's
    and Stable Audio's processors call torch directly, so a dispatcher backend would not reach them)."""
    return any(hasattr(getattr(m, "processor", None), "_attention_backend") for m in transformer.modules())


def set_attention(transformer: torch.nn.Module, name: str) -> None:
    """Switch ``transformer`` to attention kernel ``name``; a ``ValueError`` saying why it cannot (a
    :class:`~rewards.optional.MissingExtraError` naming the extra for xformers)."""
    if name == "sdpa":
        return
    if name == "xformers":
        require("xformers")  # names the extra when it is missing
        transformer.enable_xformers_memory_efficient_attention()
        return
    from diffusers.models.attention_dispatch import AttentionBackendName

    backends = sorted(b.value for b in AttentionBackendName if not b.value.endswith("_hub"))
    if name.endswith("_hub"):
        raise ValueError(f"{name!r} downloads and runs a kernel from the hub at start-up; install the kernel's "
                         "package and name its local backend instead")
    if name not in backends:
        raise ValueError(f"unknown attention {name!r}; choose {', '.join(NATIVE_CHOICES)} or a diffusers backend: "
                         f"{', '.join(backends)}")
    if not dispatched_attention(transformer):
        raise ValueError(f"{type(transformer).__name__}'s attention does not go through diffusers' dispatcher, so "
                         f"{name!r} would not reach it; use sdpa or xformers")
    try:
        transformer.set_attention_backend(name)
    except (RuntimeError, ImportError) as err:  # the backend's package or hardware is missing
        raise ValueError(f"{name!r} is not usable here: {str(err).splitlines()[0]}") from None
