"""Model adapter for FLUX.1 Kontext (``FluxKontextPipeline``): image editing by in-context image tokens.

The condition image is VAE-encoded (the distribution's mode), shifted and scaled, packed 2 x 2 and
concatenated on the sequence after the noisy tokens, with the same RoPE grid but ``ids[..., 0] = 1``;
the prediction is sliced back to the noisy tokens. Everything else is FLUX.1's (distilled guidance,
one forward per step, the resolution-shifted schedule from the noisy sequence length only), so the
adapter extends :class:`~genrl.models.flux.FluxAdapter`. Each prompt's condition is a mapping with an
``"image"``: a PIL image, a ``(3, H, W)`` tensor in [0, 1], or a file path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS
from PIL import Image

from .base import register_adapter
from .flux import FluxAdapter, FluxConditioning


@dataclass
class KontextConditioning(FluxConditioning):
    """FLUX text conditioning plus the packed condition-image tokens and their position ids."""

    image_latents: torch.Tensor | None = None  # (B, N_image, 4 C)
    image_ids: torch.Tensor | None = None  # (N_image, 3), shared by the batch

    def select(self, index: torch.Tensor | slice) -> KontextConditioning:
        """The conditioning of a subset of the batch."""
        return KontextConditioning(self.embeds[index], self.pooled[index], self.text_ids,
                                   self.image_latents[index], self.image_ids)


@register_adapter("flux_kontext", "FluxKontextPipeline")
class FluxKontextAdapter(FluxAdapter):
    """Uniform policy interface over a ``FluxKontextPipeline`` (FLUX.1 Kontext-dev and tiny test configs).

    ``auto_resize`` resizes the condition image to the Kontext training resolution closest to its aspect
    ratio, as the pipeline does by default (its ``_auto_resize``); off, the image keeps its own size
    (rounded down to a multiple of 16). The output size is ``height`` x ``width`` rescaled to ``max_area``
    pixels at the same aspect ratio, as the pipeline rescales it. ``guidance_scale`` is the distilled
    guidance (Kontext-dev: 2.5).
    """

    prompt_embeddings_cacheable = False  # conditions on a source image

    condition_keys = ("image",)

    def __init__(self, pipe, *, guidance_scale: float = 2.5, max_sequence_length: int = 512,
                 height: int | None = None, width: int | None = None, auto_resize: bool = True,
                 max_area: int = 1024**2) -> None:
        super().__init__(pipe, guidance_scale=guidance_scale, max_sequence_length=max_sequence_length,
                         height=height, width=width)
        if max_area <= 0:
            raise ValueError(f"max_area={max_area} must be positive")
        aspect = self.width / self.height
        multiple = pipe.vae_scale_factor * 2
        self.width = round((max_area * aspect) ** 0.5) // multiple * multiple
        self.height = round((max_area / aspect) ** 0.5) // multiple * multiple
        self.auto_resize = auto_resize

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], guidance_scale: float | None = None,
               conditions: Sequence[Mapping[str, Any]] | None = None) -> KontextConditioning:
        """Text embeddings of the prompts and the tokens of each prompt's condition image."""
        if conditions is None or len(conditions) != len(prompts):
            raise ValueError(f"the flux_kontext family needs one condition with an 'image' per prompt "
                             f"({len(prompts)} prompts, {0 if conditions is None else len(conditions)} conditions)")
        text = super().encode(prompts, guidance_scale)
        pixels = self._condition_pixels(conditions)
        latents = self.pipe._encode_vae_image(pixels.to(self.device, self.pipe.vae.dtype), generator=None)
        latents = latents.to(text.embeds.dtype)
        b, c, h, w = latents.shape
        packed = self.pipe._pack_latents(latents, b, c, h, w)
        ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, self.device, text.embeds.dtype)
        ids[..., 0] = 1  # the condition's tokens sit on the grid's second plane
        return KontextConditioning(text.embeds, text.pooled, text.text_ids, packed, ids)

    def _condition_pixels(self, conditions: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """The condition images preprocessed as the pipeline does: one size for the batch, [-1, 1]."""
        images = []
        for i, condition in enumerate(conditions):
            if "image" not in condition:
                raise ValueError(f"condition {i} has no 'image' (keys: {sorted(condition)})")
            images.append(as_condition_image(condition["image"], i))
        processor = self.pipe.image_processor
        height, width = processor.get_default_height_width(images[0])
        if self.auto_resize:
            _, width, height = min((abs(width / height - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
        multiple = self.pipe.vae_scale_factor * 2
        height, width = height // multiple * multiple, width // multiple * multiple
        sizes = {processor.get_default_height_width(image) for image in images}
        if len(sizes) > 1 and not self.auto_resize:
            raise ValueError(f"condition images of one batch must share a size without auto_resize; got {sorted(sizes)}")
        return torch.cat([processor.preprocess(processor.resize(image, height, width), height, width)
                          for image in images])

    def _tokens(self, x: torch.Tensor, cond: KontextConditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """The noisy tokens followed by the condition image's, with their position ids."""
        return (torch.cat([x, cond.image_latents.to(x.dtype)], dim=1),
                torch.cat([self._image_ids(), cond.image_ids], dim=0))


def as_condition_image(value: Any, index: int) -> Image.Image | torch.Tensor:
    """A condition image (a PIL image, a ``(3, H, W)`` tensor in [0, 1] or a file path) as the pipelines' image
    processors take it: PIL RGB, or a ``(1, 3, H, W)`` float tensor; ``index`` names the prompt in errors."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"condition {index}: image file {str(path)!r} does not exist")
        with Image.open(path) as image:
            return image.convert("RGB")
    if isinstance(value, torch.Tensor) and value.ndim == 3 and value.shape[0] == 3:
        return value.unsqueeze(0).float()
    raise ValueError(f"condition {index}: 'image' must be a PIL image, a (3, H, W) tensor or a path, "
                     f"not {type(value).__name__}")
