"""Pretraining of the toy audio pipeline (Stable Audio Open architecture) on the toy audio world
(used by ``scripts/pretrain_toy_audio.py``).

Two stages, each an AdamW run with an EMA of the weights (:meth:`genrl.toy.pretrain.RunBase.fit_with_ema`):

1. **VAE**: the Oobleck autoencoder learns to reconstruct random crops of freshly rendered clips (its
   convolutions are local, so crops train it as well as whole clips at a fraction of the cost), with a
   multi-resolution *linear*-magnitude STFT loss (``spectral_loss=stft``), an L1 waveform loss, optionally the STFT
   loss again on pre-emphasised clips (``emphasis_weight``: square notes' overtones) and a small penalty on the
   latents' magnitude. DAC's multi-scale log-mel loss (``spectral_loss=mel``) steers the decoder to tones locked
   to its own upsampling rates instead of the notes' pitch (docs/toy-audio-world.md). It is trained as a plain
   autoencoder on the posterior mean (a sampled posterior with its initial unit-scale noise drowned the latents).
   Then the per-channel standard deviation of encoded clips is folded into its weights
   (:func:`genrl.toy.audio_pipeline.normalise_vae_latents`), since Stable Audio's pipeline does not scale latents.
   A saved pipeline's VAE can be trained further (``continue_vae``), or its decoder alone (``vae_decoder_only``:
   the encoder, hence the latent space and a DiT trained on it, stay as they are).
2. **Denoiser**: the DiT, the T5 and the projection (seconds conditioners) learn Stable Audio's objective,
   v-prediction on the cosine schedule: ``x_t = cos(pi t / 2) x0 + sin(pi t / 2) eps``, target
   ``v = cos(pi t / 2) eps - sin(pi t / 2) x0``, uniform ``t`` (the DiT's timestep input, ``atan(sigma) 2 / pi``
   of the scheduler), the context built as the pipeline builds it (T5 tokens masked and projected, then the start
   and end seconds tokens; the global token both seconds tokens). A share ``prompt_dropout`` of the rows get the
   all-zero context the pipeline uses as the unconditional branch of classifier-free guidance.

Clips are rendered fresh from every prompt of the world (the RL splits are held out from RL, not from
pretraining); the denoiser draws its batches from a pool of ``latent_pool`` clips encoded once. A run is resumable as the image pipeline's is (``<out_dir>.resume/``, every ``checkpoint_every``
steps of either stage).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_1d_rotary_pos_embed

from rewards.toyaudio.prompts import pretraining_specs
from rewards.toyaudio.render import render
from rewards.toyaudio.world import DURATION_S, NUM_SAMPLES, SAMPLE_RATE

from .audio_pipeline import (
    TOY_AUDIO_PIPELINE_DIR,
    build_toy_audio_pipeline,
    load_toy_audio_pipeline,
    normalise_vae_latents,
)
from .evaluate_audio import evaluate_audio_pipeline
from .pretrain import PretrainError
from .pretrain_media import TwoStageRun, check_two_stage_settings, pretrain_two_stage

#: (window, mel bands) of the VAE's spectral loss, from 4 ms to 256 ms windows at 8 kHz
MEL_SCALES = ((32, 5), (64, 10), (128, 20), (256, 40), (512, 80), (1024, 160), (2048, 320))


@dataclass
class AudioPretrainConfig:
    """Settings of a toy audio pretraining run (defaults: the shipped weights' recipe, which ran its two stages as
    two commands, the second with ``init_from``: docs/toy-audio-world.md)."""

    seed: int = 0
    threads: int = 2
    device: str = "auto"
    out_dir: str = str(TOY_AUDIO_PIPELINE_DIR)
    init_from: str | None = None  # continue from a saved toy audio pipeline (VAE kept unless continue_vae)
    continue_vae: bool = False  # with init_from: train the loaded VAE further (its stage runs) before the denoiser
    vae_decoder_only: bool = False  # with continue_vae: the encoder stays fixed, so the latents a loaded DiT
    # generates keep their meaning and the latents' normalisation is not refitted
    checkpoint_every: int = 100
    fresh: bool = False
    # VAE stage
    vae_steps: int = 6000
    vae_batch_size: int = 16
    vae_crop: int = 2000  # samples per training crop (a multiple of the VAE's hop)
    vae_lr: float = 1e-3
    vae_warmup_steps: int = 50
    # "stft": multi-resolution linear STFT magnitude; "mel": multi-scale log-mel (DAC), on which the VAE locks notes
    # to its intermediate rates instead of their pitch (docs/toy-audio-world.md)
    spectral_loss: str = "stft"
    waveform_weight: float = 2.0  # weight of the L1 waveform loss against the spectral loss
    spectral_weight: float = 1.0  # weight of the spectral loss (0: the waveform loss alone)
    emphasis_weight: float = 0.0  # weight of the spectral loss again on pre-emphasised clips (x[n] - 0.95 x[n-1]),
    # which weighs a partial by its frequency: the overtones that tell a square note from a sine
    latent_penalty: float = 1e-3  # weight of mean(z^2), which keeps the latents' scale bounded
    vae_ema_decay: float = 0.99
    normalise_clips: int = 256  # clips whose encoded statistics are folded into the VAE
    # denoiser stage
    latent_pool: int = 8192  # clips rendered and encoded once at the stage's start; batches are drawn from them
    steps: int = 2500
    batch_size: int = 32
    lr: float = 8e-4  # AdamW peak, cosine-decayed to 10 %
    warmup_steps: int = 100
    weight_decay: float = 0.01
    prompt_dropout: float = 0.1
    ema_decay: float = 0.999
    eval_every: int = 500
    eval_clips_per_prompt: int = 1
    final_eval_clips_per_prompt: int = 4

    def __post_init__(self) -> None:
        check_two_stage_settings(self, ("vae_crop",))
        for key in ("waveform_weight", "spectral_weight", "emphasis_weight", "latent_penalty"):
            if getattr(self, key) < 0:
                raise PretrainError(f"{key}={getattr(self, key)} must be >= 0")
        if self.spectral_loss not in SPECTRAL_LOSSES:
            raise PretrainError(f"spectral_loss={self.spectral_loss!r} is not one of {sorted(SPECTRAL_LOSSES)}")
        if self.continue_vae and self.init_from is None:
            raise PretrainError("continue_vae=true needs init_from (the pipeline whose VAE is trained further)")
        if self.vae_decoder_only and not self.continue_vae:
            raise PretrainError("vae_decoder_only=true needs continue_vae=true and init_from (a trained encoder to "
                                "keep)")


@cache
def _mel_filters(window: int, mels: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    return torch.from_numpy(mel_filter_bank(num_frequency_bins=window // 2 + 1, num_mel_filters=mels, min_frequency=0.0,
                                            max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney",
                                            mel_scale="slaney")).float()


def multiscale_mel_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The sum over :data:`MEL_SCALES` (window, mel bands) that fit the clip of the L1 distance between
    log10 mel magnitudes (floored at 1e-5; Hann windows, hop a quarter window, Slaney mels); ``(B, 1, T)``
    waveforms. Coarse scales reward energy near the right pitch, which an exact-bin spectral loss does not."""
    total = recon.new_zeros(())
    for window, mels in MEL_SCALES:
        if window > target.shape[-1]:
            continue
        hann = torch.hann_window(window, device=recon.device)
        filters = _mel_filters(window, mels).to(recon.device)
        logs = [torch.einsum("bft,fm->bmt", torch.stft(w[:, 0], window, window // 4, window=hann,
                                                        return_complex=True).abs(), filters).clamp_min(1e-5).log10()
                for w in (recon, target)]
        total = total + F.l1_loss(logs[0], logs[1])
    return total


def multiresolution_stft_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean over Hann windows of 64-1,024 samples (hop a quarter) that fit the clip of the L1 distance
    between linear STFT magnitudes, relative to the target's mean magnitude; ``(B, 1, T)`` waveforms. No log:
    silent bins weigh nothing and a missing or misplaced tone costs its energy, so silence is not a cheap answer
    (a log-mel loss let the decoder trade pitch for a smooth spectrum: docs/toy-audio-world.md)."""
    windows = [w for w in (64, 128, 256, 512, 1024) if w <= target.shape[-1]]
    total = recon.new_zeros(())
    for window in windows:
        hann = torch.hann_window(window, device=recon.device)
        mags = [torch.stft(w[:, 0], window, window // 4, window=hann, return_complex=True).abs()
                for w in (recon, target)]
        total = total + (mags[0] - mags[1]).abs().mean() / (mags[1].mean() + 1e-8)
    return total / len(windows)


def pre_emphasis(audio: torch.Tensor, coefficient: float = 0.95) -> torch.Tensor:
    """``x[n] - coefficient x[n - 1]`` along the last axis (the first sample kept): a first-order high-pass whose
    gain grows with frequency, so a spectral loss on it weighs high partials more."""
    return torch.cat([audio[..., :1], audio[..., 1:] - coefficient * audio[..., :-1]], dim=-1)


#: the VAE's spectral losses by ``spectral_loss`` name
SPECTRAL_LOSSES = {"mel": multiscale_mel_loss, "stft": multiresolution_stft_loss}


class _AudioRun(TwoStageRun):
    """One audio pretraining run (:class:`~genrl.toy.pretrain_media.TwoStageRun` on the toy audio world)."""

    def __init__(self, cfg: AudioPretrainConfig, log_path: str | Path | None) -> None:
        super().__init__(cfg, log_path)
        hop = self.pipe.vae.hop_length
        if cfg.vae_crop % hop or cfg.vae_crop > NUM_SAMPLES:
            raise PretrainError(f"vae_crop={cfg.vae_crop} must be a multiple of the VAE's hop {hop} and at most "
                                f"{NUM_SAMPLES} samples")

    def pretraining_specs(self) -> list:
        return pretraining_specs()

    def build_pipeline(self, seed: int):
        return build_toy_audio_pipeline(seed)

    def load_pipeline(self, path: str):
        return load_toy_audio_pipeline(path)

    def denoiser_components(self) -> dict[str, torch.nn.Module]:
        return {"transformer": self.pipe.transformer, "text_encoder": self.pipe.text_encoder,
                "projection_model": self.pipe.projection_model}

    def render(self, specs: list, rng: random.Random) -> torch.Tensor:
        """``(n, 1, NUM_SAMPLES)`` waveforms, each from its own render seed."""
        audio = np.stack([render(s, rng.randrange(1 << 31)) for s in specs]).astype(np.float32)
        return torch.from_numpy(audio)[:, None].to(self.device)

    # ------------------------------------------------------------------ VAE stage
    def vae_modules(self) -> list[torch.nn.Module]:
        return [self.pipe.vae.decoder] if self.cfg.vae_decoder_only else [self.pipe.vae]

    def vae_loss(self) -> torch.Tensor:
        cfg, vae = self.cfg, self.pipe.vae
        _, audio = self.clips(cfg.vae_batch_size)
        hop = vae.hop_length
        starts = [self.rng.randrange(0, NUM_SAMPLES - cfg.vae_crop + 1, hop) for _ in range(len(audio))]
        x = torch.stack([a[:, s:s + cfg.vae_crop] for a, s in zip(audio, starts, strict=True)])
        with torch.set_grad_enabled(not cfg.vae_decoder_only):
            z = vae.encode(x).latent_dist.mean
        recon = vae.decode(z).sample
        spectral_loss, loss = SPECTRAL_LOSSES[cfg.spectral_loss], cfg.waveform_weight * F.l1_loss(recon, x)
        if cfg.spectral_weight:
            loss = loss + cfg.spectral_weight * spectral_loss(recon, x)
        if cfg.emphasis_weight:
            loss = loss + cfg.emphasis_weight * spectral_loss(pre_emphasis(recon), pre_emphasis(x))
        return loss + cfg.latent_penalty * z.pow(2).mean()

    def after_vae(self) -> None:
        self.normalise_latents(self.cfg.normalise_clips, fold=not self.cfg.vae_decoder_only)

    @torch.no_grad()
    def normalise_latents(self, n: int, fold: bool = True) -> None:
        """Fold the per-channel statistics of ``n`` encoded clips into the VAE (unless ``fold`` is off: a fixed
        encoder keeps its normalisation); logs the reconstruction's signal-to-noise ratio on them."""
        _, audio = self.clips(n)
        vae = self.pipe.vae
        z = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in audio.split(32)])
        mean, std = z.mean(dim=(0, 2)), z.std(dim=(0, 2))
        if fold:
            normalise_vae_latents(vae, std)
        recon = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mean).sample for chunk in audio.split(32)])
        snr = 10 * math.log10(audio.pow(2).mean().item() / (recon - audio).pow(2).mean().item())
        self.log({"stage": "vae_done", "elapsed_s": self.elapsed(), "reconstruction_snr_db": round(snr, 2),
                  "latent_std_before": [round(v, 3) for v in std.tolist()],
                  "latent_mean_after": [round(v, 3) for v in (mean / std if fold else mean).tolist()]})

    # ------------------------------------------------------------------ denoiser stage
    def context(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention context and global token of ``prompts``, built as ``StableAudioPipeline`` builds them."""
        pipe, n = self.pipe, len(prompts)
        text = pipe.encode_prompt(prompts, self.device, False)
        start, end = pipe.encode_duration(0.0, DURATION_S, self.device, False, n)
        return torch.cat([text, start, end], dim=1), torch.cat([start, end], dim=2)

    def denoiser_loss(self) -> torch.Tensor:
        cfg, pipe = self.cfg, self.pipe
        prompts, x0 = self.pool_batch()
        n = x0.shape[0]
        t = torch.rand(n, generator=self.noise_gen).to(self.device)
        eps = torch.randn(x0.shape, generator=self.noise_gen).to(self.device)
        keep = (torch.rand(n, generator=self.noise_gen) >= cfg.prompt_dropout).float().to(self.device)
        alpha, sigma = torch.cos(math.pi / 2 * t).view(-1, 1, 1), torch.sin(math.pi / 2 * t).view(-1, 1, 1)
        context, global_token = self.context(prompts)
        context = context * keep.view(-1, 1, 1)  # the pipeline's unconditional branch: an all-zero context
        rotary = get_1d_rotary_pos_embed(pipe.rotary_embed_dim, x0.shape[-1] + 1, use_real=True,
                                         repeat_interleave_real=False)
        pred = pipe.transformer(alpha * x0 + sigma * eps, t, encoder_hidden_states=context,
                                global_hidden_states=global_token,
                                rotary_embedding=tuple(r.to(self.device) for r in rotary), return_dict=False)[0]
        return F.mse_loss(pred, alpha * eps - sigma * x0)

    def evaluate_pipeline(self, clips_per_prompt: int, seed: int):
        return evaluate_audio_pipeline(self.pipe, clips_per_prompt=clips_per_prompt, seed=seed)


def pretrain_audio(cfg: AudioPretrainConfig, log_path: str | Path | None = None) -> dict:
    """Train the toy audio pipeline (VAE, then denoiser), save it to ``cfg.out_dir`` and return the final held-out
    evaluation. A run interrupted after a checkpoint continues from it when called again with the same settings."""
    return pretrain_two_stage(_AudioRun, cfg, log_path)
