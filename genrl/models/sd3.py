"""Model adapter for the Stable Diffusion 3 family (SD3, SD3.5 and the toy pipeline): one code path.

The adapter turns a ``StableDiffusion3Pipeline`` into the uniform policy the samplers use:
encode prompts once per rollout, draw initial noise exactly as the pipeline does, predict the
velocity at ``(x, sigma)`` with classifier-free guidance in one batched forward, and decode.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from .base import ModelAdapter, register_adapter

#: attention projections of the joint (MM-DiT) blocks, the reference Flow-GRPO's LoRA targets
MMDIT_LORA_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                      "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")


@contextmanager
def t5_tokens_dropped(pipe, max_sequence_length: int | None) -> Iterator[None]:
    """Within the block, a ``StableDiffusion3Pipeline`` embeds prompts with no T5 tokens if ``max_sequence_length`` is 0.

    diffusers' SD3 pipeline gives zero T5 tokens only when it has no T5 encoder (it substitutes
    ``max_sequence_length`` zero tokens); a T5 encoder cannot embed an empty sequence. So for 0 the encoder
    is hidden for the block, on the instance only (the pipeline's config, and so what it saves, is untouched).
    """
    encoder = getattr(pipe, "text_encoder_3", None)
    if max_sequence_length != 0 or encoder is None:
        yield
        return
    object.__setattr__(pipe, "text_encoder_3", None)  # DiffusionPipeline.__setattr__ would rewrite its config
    try:
        yield
    finally:
        object.__setattr__(pipe, "text_encoder_3", encoder)


@dataclass
class Conditioning:
    """Prompt embeddings for one batch; the negative ones are set when CFG is used."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    negative_embeds: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    def select(self, index: torch.Tensor | slice) -> Conditioning:
        """The conditioning of a subset of the batch."""
        pick = (lambda t: None if t is None else t[index])
        return Conditioning(pick(self.embeds), pick(self.pooled), pick(self.negative_embeds),
                            pick(self.negative_pooled))


@register_adapter("sd3", "StableDiffusion3Pipeline")
class SD3Adapter(ModelAdapter):
    """Uniform policy interface over a ``StableDiffusion3Pipeline``.

    ``max_sequence_length`` is the number of T5 tokens (256 for SD3.5); 0 embeds none, with or without
    a T5 encoder (the toy pipeline, whose T5 slot emits zeros that its transformer ignores).
    """

    prompt_embeddings_cacheable = True

    default_lora_targets = MMDIT_LORA_TARGETS
    frozen_components = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3")

    def __init__(self, pipe, *, guidance_scale: float = 4.5, max_sequence_length: int = 256,
                 negative_prompt: str = "", height: int | None = None, width: int | None = None) -> None:
        super().__init__(pipe)
        self.height, self.width = height, width
        self.guidance_scale = guidance_scale
        self.max_sequence_length = max_sequence_length
        self.negative_prompt = negative_prompt
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], guidance_scale: float | None = None,
               conditions: Sequence[Mapping[str, Any]] | None = None) -> Conditioning:
        """Embed prompts with the pipeline's own encoders, and the negative prompt when sampling at
        ``guidance_scale`` (None: the adapter's) uses CFG (a scale > 1)."""
        self.check_no_conditions(conditions)
        cfg = (self.guidance_scale if guidance_scale is None else guidance_scale) > 1.0
        with t5_tokens_dropped(self.pipe, self.max_sequence_length):
            embeds, neg, pooled, neg_pooled = self.pipe.encode_prompt(
                prompt=list(prompts), prompt_2=None, prompt_3=None, device=self.device,
                do_classifier_free_guidance=cfg, negative_prompt=[self.negative_prompt] * len(prompts) if cfg else None,
                max_sequence_length=self.max_sequence_length)
        return Conditioning(embeds, pooled, neg, neg_pooled)

    def schedule(self, num_steps: int) -> torch.Tensor:
        """The pipeline scheduler's sigmas for ``num_steps`` steps (length ``num_steps + 1``, ending at 0)."""
        scheduler = self.pipe.scheduler.__class__.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(num_steps, device="cpu")
        return scheduler.sigmas.to(torch.float32)

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
        """(channels, h, w) of the latents for an image size (default: the transformer's native size)."""
        vsf = self.pipe.vae_scale_factor
        height = height or self.height or self.pipe.default_sample_size * vsf
        width = width or self.width or self.pipe.default_sample_size * vsf
        return self.transformer.config.in_channels, height // vsf, width // vsf

    def initial_noise(self, generators: Sequence[torch.Generator], height: int | None = None,
                      width: int | None = None) -> torch.Tensor:
        """One noise tensor per generator, drawn exactly as the pipeline's ``prepare_latents`` does."""
        shape = (len(generators), *self.latent_shape(height, width))
        return randn_tensor(shape, generator=list(generators), device=self.device, dtype=self.transformer.dtype)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Conditioning,
                 guidance_scale: float | None = None, model=None) -> torch.Tensor:
        """CFG-combined velocity at noise level ``sigma`` (scalar or per sample), in one batched forward.

        ``model`` replaces the transformer for this call (the DDP-wrapped one when training).
        """
        model = model or self.transformer
        w = self.guidance_scale if guidance_scale is None else guidance_scale
        t = torch.as_tensor(sigma, device=x.device, dtype=torch.float32) * self.num_train_timesteps
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        if w > 1.0:
            if cond.negative_embeds is None:
                raise ValueError(f"guidance_scale {w} > 1 needs negative embeddings; encode the prompts with "
                                 "that guidance_scale")
            out = model(hidden_states=torch.cat([x, x]), timestep=torch.cat([t, t]),
                                   encoder_hidden_states=torch.cat([cond.negative_embeds, cond.embeds]),
                                   pooled_projections=torch.cat([cond.negative_pooled, cond.pooled]),
                                   return_dict=False)[0]
            uncond, text = out.chunk(2)
            return uncond + w * (text - uncond)
        return model(hidden_states=x, timestep=t, encoder_hidden_states=cond.embeds,
                                pooled_projections=cond.pooled, return_dict=False)[0]

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` in [0, 1] -> latents: the VAE posterior's mean, shifted and scaled as the
        pipeline's image-to-image variant does (the inverse of :meth:`decode`'s scaling)."""
        vae = self.pipe.vae
        z = vae.encode(images.to(self.device, vae.dtype) * 2 - 1).latent_dist.mean
        return ((z - vae.config.shift_factor) * vae.config.scaling_factor).to(self.transformer.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``(N, 3, H, W)`` in [0, 1] (differentiable)."""
        vae = self.pipe.vae
        latents = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(latents, return_dict=False)[0] / 2 + 0.5).clamp(0, 1)
