"""Model adapter for Stable Audio Open (``StableAudioPipeline``): T5 text and seconds conditioning, a DiT
predicting v on a cosine schedule written in VE sigma units, an Oobleck VAE decoding to stereo audio.

The samplers work on the flow-matching path ``x = (1 - s) x0 + s eps``. Stable Audio's scheduler
(``CosineDPMSolverMultistepScheduler``) holds ``x_ve = x0 + sigma eps`` at VE noise levels ``sigma`` in
``[sigma_min, sigma_max]`` (0.3 .. 500), so the adapter maps the two (the same Gaussian path, rescaled per
level): ``s = sigma / (1 + sigma)`` and ``x = x_ve / (1 + sigma)`` (:meth:`flow_sigma`,
:meth:`flow_latents`). With ``n = sqrt((1 - s)^2 + s^2)``, ``alpha = (1 - s) / n`` and ``beta = s / n`` (the
VP coefficients), the network sees ``x_vp = x / n`` (the scheduler's ``c_in x_ve``) at timestep
``atan(sigma) 2 / pi``, predicts ``v``, and its flow velocity is ``eps - x0 = (beta - alpha) x_vp + v / n``.
Guidance is applied to ``v`` (which the flow velocity is affine in) with an all-zero context as the
unconditional branch, as the stock pipeline does without a negative prompt.

Sampling: the stock scheduler is an SDE solver (DPM-Solver++ 2M with Brownian-tree noise, which needs
``torchsde``: the ``audio`` extra). Its first-order update is the DDIM step with ``eta = 1``, which is the
rollout's ``ddim`` step type (:func:`genrl.sampling.steps.ddim_step`) at ``noise_level = 1`` in these
coordinates; the deterministic sampler (Euler on the flow path) is DDIM with ``eta = 0``, the first-order
probability-flow solver. The last step (to sigma = 0) is deterministic, so it stays outside a training window.

LoRA: the DiT has no diffusers ``PeftAdapterMixin`` and the pipeline no LoRA loader, so LoRA is injected and
exported with peft (:mod:`genrl.models.lora`), and a merged export is a plain ``save_pretrained`` pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.utils.torch_utils import randn_tensor

from rewards.media import Media

from .base import ModelAdapter, register_adapter

#: self- and cross-attention projections of every StableAudioDiTBlock
STABLE_AUDIO_LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                             "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")


@dataclass
class StableAudioConditioning:
    """Cross-attention context (text tokens, then the start and end seconds tokens), the global conditioning
    (both seconds tokens side by side) and, when CFG is used, the unconditional context."""

    embeds: torch.Tensor  # (B, L + 2, D)
    global_embeds: torch.Tensor  # (B, 1, 2 D)
    negative_embeds: torch.Tensor | None = None  # (B, L + 2, D): zeros, or the negative prompt's

    def select(self, index: torch.Tensor | slice) -> StableAudioConditioning:
        """The conditioning of a subset of the batch."""
        neg = None if self.negative_embeds is None else self.negative_embeds[index]
        return StableAudioConditioning(self.embeds[index], self.global_embeds[index], neg)


@register_adapter("stable_audio", "StableAudioPipeline")
class StableAudioAdapter(ModelAdapter):
    """Uniform policy interface over a ``StableAudioPipeline`` (Stable Audio Open 1.0 and tiny test configs).

    Options: ``guidance_scale`` (CFG on v, 7.0 as the stock pipeline), ``audio_start_in_s`` / ``audio_end_in_s``
    (the seconds conditioning and the trimmed clip; None: the model's full length, 47.55 s for Stable Audio
    Open) and ``negative_prompt`` (None: the all-zero unconditional context).
    """

    prompt_embeddings_cacheable = True

    media_kind = "audio"
    default_lora_targets = STABLE_AUDIO_LORA_TARGETS
    frozen_components = ("vae", "text_encoder", "projection_model")
    block_class_names = ("StableAudioDiTBlock",)  # the DiT declares no _no_split_modules

    def __init__(self, pipe, *, guidance_scale: float = 7.0, audio_start_in_s: float = 0.0,
                 audio_end_in_s: float | None = None, negative_prompt: str | None = None) -> None:
        super().__init__(pipe)
        config = pipe.scheduler.config
        if config.get("prediction_type") != "v_prediction" or config.get("sigma_data", 1.0) != 1.0 or \
                not hasattr(pipe.scheduler, "precondition_noise"):
            raise ValueError("the stable_audio family needs the pipeline's CosineDPMSolverMultistepScheduler with "
                             f"prediction_type 'v_prediction' and sigma_data 1 (got {type(pipe.scheduler).__name__} "
                             f"{dict(prediction_type=config.get('prediction_type'), sigma_data=config.get('sigma_data'))})")
        self.sampling_rate = int(pipe.vae.config.sampling_rate)
        max_length = self.transformer.config.sample_size * pipe.vae.hop_length / self.sampling_rate
        end = max_length if audio_end_in_s is None else float(audio_end_in_s)
        if not 0 <= audio_start_in_s < end or end - audio_start_in_s > max_length:
            raise ValueError(f"audio_start_in_s={audio_start_in_s}, audio_end_in_s={audio_end_in_s}: need "
                             f"0 <= start < end and end - start <= {max_length:g} s (the model's length)")
        self.guidance_scale = guidance_scale
        self.audio_start_in_s, self.audio_end_in_s = float(audio_start_in_s), end
        self.negative_prompt = negative_prompt
        self._rotary: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ coordinates
    def flow_sigma(self, scheduler_sigma: torch.Tensor | float) -> torch.Tensor:
        """VE sigma -> flow-matching ``s = sigma / (1 + sigma)``."""
        sigma = torch.as_tensor(scheduler_sigma, dtype=torch.float32)
        return sigma / (1 + sigma)

    def flow_latents(self, scheduler_latents: torch.Tensor, scheduler_sigma: torch.Tensor | float) -> torch.Tensor:
        """``x_ve = x0 + sigma eps`` -> ``x = x_ve / (1 + sigma)``."""
        sigma = torch.as_tensor(scheduler_sigma, dtype=torch.float32, device=scheduler_latents.device)
        sigma = sigma.reshape(-1, *([1] * (scheduler_latents.ndim - 1))) if sigma.ndim else sigma
        return (scheduler_latents.float() / (1 + sigma)).to(scheduler_latents.dtype)

    # ------------------------------------------------------------------ the policy
    @torch.no_grad()
    def encode(self, prompts: Sequence[str], guidance_scale: float | None = None,
               conditions: Sequence[Mapping[str, Any]] | None = None) -> StableAudioConditioning:
        """T5 text tokens (projected, masked) with the seconds tokens, as the stock pipeline builds them, and the
        unconditional context when sampling at ``guidance_scale`` (None: the adapter's) uses CFG."""
        self.check_no_conditions(conditions)
        pipe, n = self.pipe, len(prompts)
        cfg = (self.guidance_scale if guidance_scale is None else guidance_scale) > 1.0
        negative = [self.negative_prompt] * n if cfg and self.negative_prompt is not None else None
        text = pipe.encode_prompt(list(prompts), self.device, cfg, negative_prompt=negative)
        start, end = pipe.encode_duration(self.audio_start_in_s, self.audio_end_in_s, self.device, False, n)
        if negative is not None:  # encode_prompt returned [negative; positive]
            neg_text, text = text.chunk(2)
        embeds = torch.cat([text, start, end], dim=1)
        neg = None
        if cfg:
            neg = torch.zeros_like(embeds) if negative is None else torch.cat([neg_text, start, end], dim=1)
        dtype = self.transformer.dtype
        return StableAudioConditioning(embeds.to(dtype), torch.cat([start, end], dim=2).to(dtype),
                                       None if neg is None else neg.to(dtype))

    def _scheduler(self, num_steps: int):
        scheduler = self.pipe.scheduler.__class__.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(num_steps, device="cpu")
        return scheduler

    def schedule(self, num_steps: int) -> torch.Tensor:
        """The scheduler's VE sigmas for ``num_steps`` steps (then 0), as flow-matching levels."""
        return self.flow_sigma(self._scheduler(num_steps).sigmas.to(torch.float32))

    def latent_shape(self) -> tuple[int, int]:
        """(channels, length) of one clip's latents: the model always generates its full length."""
        return self.transformer.config.in_channels, int(self.transformer.config.sample_size)

    def initial_noise(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """One noise latent per generator, drawn as the pipeline's ``prepare_latents`` (``randn *
        init_noise_sigma`` in VE units), in flow coordinates at ``sigma_max``."""
        noise = randn_tensor((len(generators), *self.latent_shape()), generator=list(generators), device=self.device,
                             dtype=torch.float32)
        sigma_max = float(self.pipe.scheduler.config.sigma_max)
        return self.flow_latents(noise * math.sqrt(sigma_max**2 + 1), sigma_max)

    def _rotary_embedding(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (length, str(device))
        if key not in self._rotary:  # the stock pipeline's: one position per latent plus the global token
            self._rotary[key] = tuple(t.to(device) for t in get_1d_rotary_pos_embed(
                self.pipe.rotary_embed_dim, length + 1, use_real=True, repeat_interleave_real=False))
        return self._rotary[key]

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: StableAudioConditioning,
                 guidance_scale: float | None = None, model=None) -> torch.Tensor:
        """The flow velocity ``eps - x0`` from the network's guided v-prediction at flow level ``sigma`` (scalar or
        per sample), in one batched forward; ``model`` replaces the DiT for this call."""
        model = model or self.transformer
        w = self.guidance_scale if guidance_scale is None else guidance_scale
        s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        norm = torch.sqrt((1 - s) ** 2 + s**2).view(-1, 1, 1)
        x_vp = x.float() / norm  # the scheduler's c_in * x_ve
        t = self.pipe.scheduler.precondition_noise(s / (1 - s))  # atan(sigma_ve) 2 / pi, 1 at s = 1
        hidden = x_vp.to(self.transformer.dtype)
        rotary = self._rotary_embedding(x.shape[-1], x.device)
        if w > 1.0:
            if cond.negative_embeds is None:
                raise ValueError(f"guidance_scale {w} > 1 needs the unconditional context; encode the prompts with "
                                 "that guidance_scale")
            out = model(torch.cat([hidden, hidden]), torch.cat([t, t]),
                        encoder_hidden_states=torch.cat([cond.negative_embeds, cond.embeds]),
                        global_hidden_states=torch.cat([cond.global_embeds, cond.global_embeds]),
                        rotary_embedding=rotary, return_dict=False)[0]
            uncond, text = out.float().chunk(2)
            v = uncond + w * (text - uncond)
        else:
            v = model(hidden, t, encoder_hidden_states=cond.embeds, global_hidden_states=cond.global_embeds,
                      rotary_embedding=rotary, return_dict=False)[0].float()
        alpha, beta = (1 - s).view(-1, 1, 1) / norm, s.view(-1, 1, 1) / norm
        return (beta - alpha) * x_vp + v / norm

    def as_media(self, decoded: torch.Tensor) -> Media:
        """Decoded clips as audio media at the VAE's sampling rate."""
        return Media(decoded, "audio", sample_rate=self.sampling_rate)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> audio ``(N, channels, samples)`` in [-1, 1] (differentiable), trimmed to
        ``[audio_start_in_s, audio_end_in_s]`` as the stock pipeline trims it."""
        vae = self.pipe.vae
        audio = vae.decode(latents.to(vae.dtype)).sample
        start, end = int(self.audio_start_in_s * self.sampling_rate), int(self.audio_end_in_s * self.sampling_rate)
        return audio[:, :, start:end].clamp(-1, 1)
