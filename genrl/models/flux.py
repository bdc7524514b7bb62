"""Model adapter for FLUX.1 (``FluxPipeline``): guidance-distilled, so one forward per step and no CFG batch.

Latents are kept in the pipeline's packed form ``(B, (H/2)(W/2), 4C)``; the sampling steps and the
mean-over-dimensions log-prob do not care about the layout. The schedule is the pipeline's:
``linspace(1, 1/T, T)`` shifted with the resolution-dependent ``mu``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.utils.torch_utils import randn_tensor

from .base import ModelAdapter, register_adapter
from .sd3 import MMDIT_LORA_TARGETS


def shifted_sigmas(scheduler: Any, num_steps: int, image_seq_len: int) -> torch.Tensor:
    """The sigmas FLUX-style pipelines (FLUX, Kontext, Qwen-Image) sample with: ``linspace(1, 1/T, T)`` through a
    fresh copy of ``scheduler``, shifted by the ``mu`` of the noisy sequence length when the scheduler shifts
    dynamically; length ``T + 1``, ending at 0."""
    config = scheduler.config
    mu = calculate_shift(image_seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    fresh = scheduler.__class__.from_config(config)
    fresh.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu, device="cpu")
    return fresh.sigmas.to(torch.float32)


class PackedLatents:
    """Schedule and initial noise of pipelines that keep latents packed 2 x 2 into tokens, ``(B, (h/2)(w/2), 4C)``
    (FLUX, Kontext, Qwen-Image), for an adapter with ``pipe``, ``height`` and ``width``: the pipeline's
    resolution-shifted sigmas and its ``prepare_latents`` draw."""

    #: the pipeline draws noise with a frame axis of one, ``(B, 1, C, h, w)`` (Qwen-Image's 3-D VAE); the values
    #: are the same per generator, the flag keeps the draw literally the pipeline's
    noise_has_frame_axis: ClassVar[bool] = False

    def _latent_hw(self) -> tuple[int, int]:
        vsf = self.pipe.vae_scale_factor
        return 2 * (int(self.height) // (vsf * 2)), 2 * (int(self.width) // (vsf * 2))

    def schedule(self, num_steps: int) -> torch.Tensor:
        """The pipeline's sigmas for ``num_steps`` steps (resolution-shifted; length ``num_steps + 1``, ending at 0)."""
        h, w = self._latent_hw()
        return shifted_sigmas(self.pipe.scheduler, num_steps, (h // 2) * (w // 2))

    def initial_noise(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Packed noise, one sample per generator, drawn exactly as the pipeline's ``prepare_latents`` does."""
        h, w = self._latent_hw()
        channels = self.transformer.config.in_channels // 4
        shape = (len(generators), *((1,) if self.noise_has_frame_axis else ()), channels, h, w)
        noise = randn_tensor(shape, generator=list(generators), device=self.device, dtype=self.transformer.dtype)
        return self.pipe._pack_latents(noise, len(generators), channels, h, w)


@dataclass
class FluxConditioning:
    """T5 sequence embeddings, pooled CLIP embeddings and the text position ids (shared by the batch)."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor

    shared_fields: ClassVar[tuple[str, ...]] = ("text_ids",)  # one for the whole batch

    def select(self, index: torch.Tensor | slice) -> FluxConditioning:
        """The conditioning of a subset of the batch."""
        return FluxConditioning(self.embeds[index], self.pooled[index], self.text_ids)


@register_adapter("flux", "FluxPipeline")
class FluxAdapter(PackedLatents, ModelAdapter):
    """Uniform policy interface over a ``FluxPipeline`` (FLUX.1-dev/schnell and tiny test configs).

    ``guidance_scale`` feeds the distilled guidance embedding when the transformer has one
    (FLUX.1-dev: 3.5); there is no classifier-free guidance batch.
    """

    prompt_embeddings_cacheable = True

    default_lora_targets = MMDIT_LORA_TARGETS
    frozen_components = ("vae", "text_encoder", "text_encoder_2")

    def __init__(self, pipe, *, guidance_scale: float = 3.5, max_sequence_length: int = 512,
                 height: int | None = None, width: int | None = None) -> None:
        super().__init__(pipe)
        self.guidance_scale = guidance_scale
        self.max_sequence_length = max_sequence_length
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps
        self.height = height or pipe.default_sample_size * pipe.vae_scale_factor
        self.width = width or pipe.default_sample_size * pipe.vae_scale_factor

    @property
    def use_cfg(self) -> bool:
        return False  # guidance is distilled into an embedding: never a CFG batch

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], guidance_scale: float | None = None,
               conditions: Sequence[Mapping[str, Any]] | None = None) -> FluxConditioning:
        """Embed prompts with the pipeline's CLIP and T5 encoders (``guidance_scale``, distilled, needs no
        negative prompt; accepted for the adapters' common interface)."""
        self.check_no_conditions(conditions)
        embeds, pooled, text_ids = self.pipe.encode_prompt(prompt=list(prompts), prompt_2=None, device=self.device,
                                                          max_sequence_length=self.max_sequence_length)
        return FluxConditioning(embeds, pooled, text_ids)

    def _image_ids(self) -> torch.Tensor:
        h, w = self._latent_hw()
        return self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.transformer.dtype)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: FluxConditioning,
                 guidance_scale: float | None = None, model=None) -> torch.Tensor:
        """Velocity at noise level ``sigma`` (scalar or per sample); ``model`` overrides the transformer (e.g. DDP)."""
        model = model or self.transformer
        w = self.guidance_scale if guidance_scale is None else guidance_scale
        t = torch.as_tensor(sigma, device=x.device, dtype=torch.float32) * self.num_train_timesteps
        t = (t.expand(x.shape[0]) if t.ndim == 0 else t).to(x.dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([x.shape[0]], w, device=x.device, dtype=torch.float32)
        hidden, ids = self._tokens(x, cond)
        out = model(hidden_states=hidden, timestep=t / 1000, guidance=guidance, pooled_projections=cond.pooled,
                    encoder_hidden_states=cond.embeds, txt_ids=cond.text_ids, img_ids=ids, return_dict=False)[0]
        return out[:, : x.shape[1]]  # the noisy tokens' prediction (a family may append condition tokens)

    def _tokens(self, x: torch.Tensor, cond: FluxConditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """The image-stream tokens the transformer sees and their position ids: the noisy latents alone."""
        return x, self._image_ids()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed latents -> images ``(N, 3, H, W)`` in [0, 1] (differentiable)."""
        vae = self.pipe.vae
        latents = self.pipe._unpack_latents(latents, self.height, self.width, self.pipe.vae_scale_factor)
        latents = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(latents, return_dict=False)[0] / 2 + 0.5).clamp(0, 1)
