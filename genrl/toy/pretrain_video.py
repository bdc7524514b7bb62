"""Pretraining of the toy video pipeline (Wan2.1 architecture) on the toy video world (used by
``scripts/pretrain_toy_video.py``).

Two stages, each an AdamW run with an EMA of the weights (:meth:`genrl.toy.pretrain.RunBase.fit_with_ema`):

1. **VAE**: Wan's causal 3-D autoencoder learns to reconstruct freshly rendered clips, with an L1 loss on the
   posterior mean's decoding before the decoder's final clamp (:func:`decode_unclamped`; a plain autoencoder, as
   the toy audio VAE: the toy never samples the posterior) and a small penalty on the latents' magnitude. Then the per-channel mean and standard deviation of encoded clips are
   written into its config (``latents_mean`` / ``latents_std``), which ``WanPipeline`` applies when it decodes.
2. **Denoiser**: the transformer and the UMT5 text tower learn Wan's flow-matching objective: ``x_t = (1 - s) x0
   + s eps`` for ``s`` uniform in [0, 1], the transformer sees timestep ``1000 s`` and predicts ``eps - x0``, the
   prompt embeddings built as the pipeline builds them (padded tokens zeroed). A share ``prompt_dropout`` of the
   prompts is replaced by "" (the pipeline's negative prompt, the unconditional branch of classifier-free
   guidance).

Clips are rendered fresh from every prompt of the world (the RL splits are held out from RL, not from
pretraining); the denoiser draws its batches from a pool of ``latent_pool`` clips encoded once. A run is
resumable as the other toy pipelines' are (``<out_dir>.resume/``, every ``checkpoint_every`` steps of either
stage), and continues from a saved pipeline with ``init_from`` (VAE kept and its stage skipped, or trained further
with ``continue_vae``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rewards.toyvideo.prompts import pretraining_specs
from rewards.toyvideo.render import render_batch

from .evaluate_video import evaluate_video_pipeline
from .pretrain_media import TwoStageRun, check_two_stage_settings, pretrain_two_stage
from .tokenizer import MODEL_MAX_LENGTH
from .video_pipeline import TOY_VIDEO_PIPELINE_DIR, build_toy_video_pipeline, load_toy_video_pipeline


@dataclass
class VideoPretrainConfig:
    """Settings of a toy video pretraining run (defaults: the recipe of the shipped weights)."""

    seed: int = 0
    threads: int = 2
    device: str = "auto"
    out_dir: str = str(TOY_VIDEO_PIPELINE_DIR)
    init_from: str | None = None  # continue from a saved toy video pipeline (VAE kept, its stage skipped)
    continue_vae: bool = False  # with init_from: train the loaded VAE further (its stage runs) before the denoiser
    checkpoint_every: int = 100
    fresh: bool = False
    # VAE stage
    vae_steps: int = 2500
    vae_batch_size: int = 8
    vae_lr: float = 1e-3
    vae_warmup_steps: int = 50
    latent_penalty: float = 1e-4  # weight of mean(z^2), which keeps the latents' scale bounded
    vae_ema_decay: float = 0.99
    normalise_clips: int = 256  # clips whose encoded statistics go into the VAE's latents_mean / latents_std
    # denoiser stage
    latent_pool: int = 8192  # clips rendered and encoded once at the stage's start; batches are drawn from them
    steps: int = 4000
    batch_size: int = 32
    lr: float = 8e-4  # AdamW peak, cosine-decayed to 10 %
    warmup_steps: int = 100
    weight_decay: float = 0.01
    prompt_dropout: float = 0.1
    ema_decay: float = 0.999
    eval_every: int = 1000
    eval_clips_per_prompt: int = 1
    final_eval_clips_per_prompt: int = 4

    def __post_init__(self) -> None:
        check_two_stage_settings(self)


def decode_unclamped(vae, z: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKLWan.decode(z)`` before its final clamp to [-1, 1]: the latent frames one at a time through
    the causal decoder with its feature cache, as diffusers' ``_decode`` runs them (without tiling).

    The clamp zeroes the gradient of every pixel the decoder overshoots, and on the toy's white background the
    decoder overshoots everywhere early on: trained through it, the VAE stayed at an all-white output (L1 0.10,
    gradient norm 1e-3, for 300 steps) while without it the same batch is fitted."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(x.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=i == 0))
    vae.clear_cache()
    return torch.cat(frames, dim=2)


class _VideoRun(TwoStageRun):
    """One video pretraining run (:class:`~genrl.toy.pretrain_media.TwoStageRun` on the toy video world)."""

    def pretraining_specs(self) -> list:
        return pretraining_specs()

    def build_pipeline(self, seed: int):
        return build_toy_video_pipeline(seed)

    def load_pipeline(self, path: str):
        return load_toy_video_pipeline(path)

    def denoiser_components(self) -> dict[str, torch.nn.Module]:
        return {"transformer": self.pipe.transformer, "text_encoder": self.pipe.text_encoder}

    def render(self, specs: list, rng: random.Random) -> torch.Tensor:
        """``(n, 3, frames, H, W)`` pixels in [-1, 1]."""
        frames = render_batch(specs, rng)  # (n, F, H, W, 3) uint8
        return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0).to(self.device)

    # the VAE's normalisation lives in its config, not its weights
    def extra_state(self) -> dict:
        return {"latent_stats": self.pipe.vae.config.latents_mean + self.pipe.vae.config.latents_std}

    def restore_extra_state(self, state: dict) -> None:
        stats = state["latent_stats"]
        c = len(stats) // 2
        self.pipe.vae.register_to_config(latents_mean=list(stats[:c]), latents_std=list(stats[c:]))

    # ------------------------------------------------------------------ VAE stage
    def vae_loss(self) -> torch.Tensor:
        _, video = self.clips(self.cfg.vae_batch_size)
        z = self.pipe.vae.encode(video).latent_dist.mean
        recon = decode_unclamped(self.pipe.vae, z)
        return F.l1_loss(recon, video) + self.cfg.latent_penalty * z.pow(2).mean()

    def after_vae(self) -> None:
        self.measure_latent_stats(self.cfg.normalise_clips)

    @torch.no_grad()
    def measure_latent_stats(self, n: int) -> None:
        """Write the per-channel mean and std of ``n`` encoded clips into the VAE's config; logs the
        reconstruction's mean absolute error on them (pixels in [0, 255])."""
        _, video = self.clips(n)
        vae = self.pipe.vae
        z = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in video.split(16)])
        mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
        vae.register_to_config(latents_mean=[round(v, 6) for v in mean.tolist()],
                               latents_std=[round(v, 6) for v in std.tolist()])
        recon = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mean).sample for chunk in video.split(16)])
        error = (recon.clamp(-1, 1) - video).abs().mean().item() * 127.5
        self.log({"stage": "vae_done", "elapsed_s": self.elapsed(), "reconstruction_mae_px": round(error, 2),
                  "latents_mean": vae.config.latents_mean, "latents_std": vae.config.latents_std})

    def normalised(self, z: torch.Tensor) -> torch.Tensor:
        """Latents as the transformer sees them: ``(z - latents_mean) / latents_std`` per channel."""
        mean = torch.tensor(self.pipe.vae.config.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.pipe.vae.config.latents_std, device=z.device).view(1, -1, 1, 1, 1)
        return (z - mean) / std

    # ------------------------------------------------------------------ denoiser stage
    def pool_latents(self, media: torch.Tensor) -> torch.Tensor:
        return self.normalised(self.pipe.vae.encode(media).latent_dist.mean)

    def denoiser_loss(self) -> torch.Tensor:
        cfg, pipe = self.cfg, self.pipe
        prompts, x0 = self.pool_batch()
        keep = torch.rand(len(prompts), generator=self.noise_gen) >= cfg.prompt_dropout
        prompts = [p if k else "" for p, k in zip(prompts, keep.tolist(), strict=True)]
        s = torch.rand(len(prompts), generator=self.noise_gen).to(self.device)
        eps = torch.randn(x0.shape, generator=self.noise_gen).to(self.device)
        x_t = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * eps
        context = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=MODEL_MAX_LENGTH, device=self.device)
        pred = pipe.transformer(x_t, s * 1000, context, return_dict=False)[0]
        return F.mse_loss(pred, eps - x0)

    def evaluate_pipeline(self, clips_per_prompt: int, seed: int):
        return evaluate_video_pipeline(self.pipe, clips_per_prompt=clips_per_prompt, seed=seed)


def pretrain_video(cfg: VideoPretrainConfig, log_path: str | Path | None = None) -> dict:
    """Train the toy video pipeline (VAE, then denoiser), save it to ``cfg.out_dir`` and return the final held-out
    evaluation. A run interrupted after a checkpoint continues from it when called again with the same settings."""
    return pretrain_two_stage(_VideoRun, cfg, log_path)
