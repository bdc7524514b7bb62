"""Model adapter for Wan2.1 text-to-video (``WanPipeline``): UMT5 text, a 3-D VAE, video latents.

Latents are ``(B, 16, (F - 1) / 4 + 1, H / 8, W / 8)`` for ``F = 4k + 1`` frames, drawn in float32 as the
pipeline draws them. The schedule is the pipeline scheduler's own sigmas (for Wan2.1's
``UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3)``: ``shift s / (1 + (shift - 1) s)`` over
``s = linspace(1, 1/1000, N + 1)[:-1]``, then 0); the denoiser sees the scheduler's own timesteps at those
sigmas (UniPC's are integers, ``int(1000 sigma)``), as the stock pipeline and Flow-GRPO's Wan rollout feed
them (:meth:`WanAdapter.timestep`). CFG runs the conditional and unconditional halves in one batched forward. Flow-GRPO trains Wan with
the ``wan_sde`` step (:func:`genrl.sampling.steps.wan_sde_step`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from rewards.media import Media

from .base import ModelAdapter, register_adapter

#: self- and cross-attention projections of every Wan transformer block
WAN_LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")


@dataclass
class WanConditioning:
    """UMT5 prompt embeddings for one batch; the negative ones are set when CFG is used."""

    embeds: torch.Tensor
    negative_embeds: torch.Tensor | None = None

    def select(self, index: torch.Tensor | slice) -> WanConditioning:
        """The conditioning of a subset of the batch."""
        return WanConditioning(self.embeds[index], None if self.negative_embeds is None else self.negative_embeds[index])


@register_adapter("wan", "WanPipeline")
class WanAdapter(ModelAdapter):
    """Uniform policy interface over a ``WanPipeline`` (Wan2.1 T2V 1.3B / 14B and tiny test configs).

    Options: ``num_frames`` (``4k + 1``; Wan2.1 samples 81), ``height`` / ``width`` (multiples of 16;
    480 x 832), ``guidance_scale`` (CFG, 5.0), ``negative_prompt``, ``max_sequence_length`` (UMT5
    tokens, 512) and ``fps`` (the playback rate of the videos' media and grids; Wan2.1's are 16 fps). Wan2.2's two-expert pipelines (``transformer_2``) and per-token timesteps
    (``expand_timesteps``) are refused rather than sampled wrongly.
    """

    prompt_embeddings_cacheable = True

    media_kind = "video"
    default_lora_targets = WAN_LORA_TARGETS
    frozen_components = ("vae", "text_encoder")

    def __init__(self, pipe, *, guidance_scale: float = 5.0, num_frames: int = 81, height: int = 480, width: int = 832,
                 negative_prompt: str = "", max_sequence_length: int = 512, fps: float = 16.0) -> None:
        super().__init__(pipe)
        if getattr(pipe, "transformer_2", None) is not None or pipe.config.get("expand_timesteps", False):
            raise ValueError("Wan2.2 pipelines (transformer_2 / expand_timesteps) are not supported by the wan family")
        temporal, spatial = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
        patch = self.transformer.config.patch_size
        if num_frames < 1 or (num_frames - 1) % temporal:
            raise ValueError(f"num_frames={num_frames} must be {temporal}k + 1 (the VAE compresses time by {temporal})")
        for name, size, step in (("height", height, spatial * patch[1]), ("width", width, spatial * patch[2])):
            if size <= 0 or size % step:
                raise ValueError(f"{name}={size} must be a positive multiple of {step} (VAE x{spatial}, patch {patch[1]})")
        if fps <= 0:
            raise ValueError(f"fps={fps} must be positive")
        self.guidance_scale, self.fps = guidance_scale, float(fps)
        self.num_frames, self.height, self.width = num_frames, height, width
        self.negative_prompt = negative_prompt
        self.max_sequence_length = max_sequence_length or 512
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps
        probe = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
        probe.set_timesteps(2, device="cpu")
        self._integer_timesteps = not probe.timesteps.is_floating_point()  # UniPC's are int64
        self._timestep_tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], guidance_scale: float | None = None,
               conditions: Sequence[Mapping[str, Any]] | None = None) -> WanConditioning:
        """UMT5 embeddings of the prompts, and of the negative prompt when sampling at ``guidance_scale``
        (None: the adapter's) uses CFG."""
        self.check_no_conditions(conditions)
        cfg = (self.guidance_scale if guidance_scale is None else guidance_scale) > 1.0
        embeds, negative = self.pipe.encode_prompt(
            prompt=list(prompts), negative_prompt=[self.negative_prompt] * len(prompts) if cfg else None,
            do_classifier_free_guidance=cfg, max_sequence_length=self.max_sequence_length, device=self.device)
        dtype = self.transformer.dtype
        return WanConditioning(embeds.to(dtype), None if negative is None else negative.to(dtype))

    def schedule(self, num_steps: int) -> torch.Tensor:
        """The pipeline scheduler's sigmas for ``num_steps`` steps (length ``num_steps + 1``, ending at 0)."""
        scheduler = self.pipe.scheduler.__class__.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(num_steps, device="cpu")
        sigmas = scheduler.sigmas.to(torch.float32)
        self._timestep_tables[num_steps] = (sigmas[:-1].clone(), scheduler.timesteps.to(torch.float32))
        return sigmas

    def latent_shape(self) -> tuple[int, int, int, int]:
        """(channels, latent frames, h, w) of one video's latents."""
        frames = (self.num_frames - 1) // self.pipe.vae_scale_factor_temporal + 1
        spatial = self.pipe.vae_scale_factor_spatial
        return self.transformer.config.in_channels, frames, self.height // spatial, self.width // spatial

    def initial_noise(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """One float32 noise video per generator, drawn exactly as the pipeline's ``prepare_latents`` does."""
        return randn_tensor((len(generators), *self.latent_shape()), generator=list(generators), device=self.device,
                            dtype=torch.float32)

    def timestep(self, sigma: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
        """The denoiser's timestep at ``sigma`` per sample, as the stock pipeline feeds it: the scheduler's own
        at a point of a :meth:`schedule`, else ``1000 sigma`` (floored when the scheduler's timesteps are
        whole numbers, as UniPC's ``int(1000 sigma)`` are)."""
        s = torch.as_tensor(sigma, dtype=torch.float32).detach().cpu().reshape(-1).expand(batch)
        t = s.double() * self.num_train_timesteps
        t = (t.floor() if self._integer_timesteps else t).float()
        for grid, steps in self._timestep_tables.values():
            hit = s[:, None] == grid[None, :]
            t = torch.where(hit.any(dim=1), steps[hit.float().argmax(dim=1)], t)
        return t.to(device)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: WanConditioning,
                 guidance_scale: float | None = None, model=None) -> torch.Tensor:
        """CFG-combined velocity at noise level ``sigma`` (scalar or per sample), in one batched forward;
        ``model`` replaces the transformer for this call (the DDP-wrapped one when training)."""
        model = model or self.transformer
        w = self.guidance_scale if guidance_scale is None else guidance_scale
        t = self.timestep(sigma, x.shape[0], x.device)
        hidden = x.to(self.transformer.dtype)
        if w > 1.0:
            if cond.negative_embeds is None:
                raise ValueError(f"guidance_scale {w} > 1 needs negative embeddings; encode the prompts with "
                                 "that guidance_scale")
            out = model(hidden_states=torch.cat([hidden, hidden]), timestep=torch.cat([t, t]),
                        encoder_hidden_states=torch.cat([cond.negative_embeds, cond.embeds]), return_dict=False)[0]
            uncond, text = out.chunk(2)
            return uncond + w * (text - uncond)
        return model(hidden_states=hidden, timestep=t, encoder_hidden_states=cond.embeds, return_dict=False)[0]

    def as_media(self, decoded: torch.Tensor) -> Media:
        """Decoded videos as video media at the adapter's ``fps``."""
        return Media(decoded, "video", fps=self.fps)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> videos ``(N, F, 3, H, W)`` in [0, 1] (differentiable), the stock pipeline's
        de-normalisation with the VAE's ``latents_mean`` / ``latents_std``."""
        vae = self.pipe.vae
        z = vae.config.z_dim
        latents = latents.to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean, device=latents.device, dtype=latents.dtype).view(1, z, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=latents.device, dtype=latents.dtype).view(1, z, 1, 1, 1)
        video = vae.decode(latents * std + mean, return_dict=False)[0]  # (N, 3, F, H, W) in [-1, 1]
        return (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
