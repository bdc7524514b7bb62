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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rewards.toyvideo.prompts import pretraining_specs
from rewards.toyvideo.render import render_batch

from .evaluate_video import evaluate_video_pipeline
from .pretrain import PretrainError, RunBase, _resolve_device, resume_dir, start_run
from .pretrain_audio import StageSettings, stage_recipe
from .tokenizer import MODEL_MAX_LENGTH
from .video_pipeline import TOY_VIDEO_PIPELINE_DIR, build_toy_video_pipeline, load_toy_video_pipeline

#: Settings that only say how a run executes: they may change between a run and its resumption.
EXECUTION_FIELDS = frozenset({"threads", "device", "checkpoint_every", "eval_every", "eval_clips_per_prompt",
                              "final_eval_clips_per_prompt", "fresh"})
#: Settings only the denoiser stage reads: a run interrupted in its VAE stage may resume with others.
DENOISER_FIELDS = frozenset({"latent_pool", "steps", "batch_size", "lr", "warmup_steps", "weight_decay", "prompt_dropout",
                             "ema_decay"})


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
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise PretrainError(f"prompt_dropout={self.prompt_dropout} must be in [0, 1)")
        for key in ("vae_steps", "steps", "checkpoint_every", "eval_every"):
            if getattr(self, key) < 0:
                raise PretrainError(f"{key}={getattr(self, key)} must be >= 0")
        for key in ("vae_batch_size", "batch_size", "normalise_clips", "latent_pool"):
            if getattr(self, key) < 1:
                raise PretrainError(f"{key}={getattr(self, key)} must be >= 1")


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


class _VideoRun(RunBase):
    """One video pretraining run: the pipeline, its random streams, the log and the resumable state."""

    def __init__(self, cfg: VideoPretrainConfig, log_path: str | Path | None) -> None:
        self.cfg = cfg
        self.device = _resolve_device(cfg.device)
        self.rng = random.Random(cfg.seed)  # prompts and layouts
        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)  # s and eps, drawn on the CPU
        self.log_path = Path(log_path) if log_path else None
        self.state_dir = resume_dir(cfg.out_dir)
        self.specs = pretraining_specs()
        self.pipe = load_toy_video_pipeline(cfg.init_from) if cfg.init_from else build_toy_video_pipeline(cfg.seed)
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(self.device)
        self.denoiser_modules = {"transformer": self.pipe.transformer, "text_encoder": self.pipe.text_encoder}
        self.start, self.elapsed_before = time.time(), 0.0

    # ------------------------------------------------------------------ resumable state
    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.pipe.vae, **self.denoiser_modules}

    def _recipe(self, cfg, stage: str = "denoiser") -> dict:
        return stage_recipe(cfg, EXECUTION_FIELDS | (DENOISER_FIELDS if stage == "vae" else frozenset()))

    def save_state(self, stage: str, step: int, opt: torch.optim.Optimizer | None, ema) -> None:
        if self.cfg.checkpoint_every:
            self.write_run_state(self._modules(), self._recipe(self.cfg), step, opt, ema, stage=stage,
                                 latent_stats=self.pipe.vae.config.latents_mean + self.pipe.vae.config.latents_std)

    def load_state(self) -> dict | None:
        state = self.read_run_state(self._modules(), lambda state: (self._recipe(state["recipe"], state["stage"]),
                                                                    self._recipe(self.cfg, state["stage"])))
        if state is not None:  # the VAE's normalisation lives in its config, not its weights
            stats = state["latent_stats"]
            c = len(stats) // 2
            self.pipe.vae.register_to_config(latents_mean=list(stats[:c]), latents_std=list(stats[c:]))
        return state

    # ------------------------------------------------------------------ data
    def clips(self, n: int, rng: random.Random | None = None) -> tuple[list[str], torch.Tensor]:
        """``n`` fresh clips of random prompts: their prompts and ``(n, 3, frames, H, W)`` pixels in [-1, 1]."""
        rng = rng or self.rng
        specs = [rng.choice(self.specs) for _ in range(n)]
        frames = render_batch(specs, rng)  # (n, F, H, W, 3) uint8
        video = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
        return [s.prompt for s in specs], video.to(self.device)

    # ------------------------------------------------------------------ VAE stage
    def vae_loss(self) -> torch.Tensor:
        _, video = self.clips(self.cfg.vae_batch_size)
        z = self.pipe.vae.encode(video).latent_dist.mean
        recon = decode_unclamped(self.pipe.vae, z)
        return F.l1_loss(recon, video) + self.cfg.latent_penalty * z.pow(2).mean()

    def train_vae(self, saved: dict | None) -> None:
        cfg = self.cfg
        settings = StageSettings(cfg.vae_steps, cfg.vae_lr, cfg.vae_warmup_steps, 0.0, cfg.vae_ema_decay,
                                 eval_every=0, checkpoint_every=cfg.checkpoint_every)
        self.fit_with_ema([self.pipe.vae], self.vae_loss, saved, stage="vae", evaluate=lambda step: None,
                          checkpoint=lambda step, opt, ema: self.save_state("vae", step, opt, ema), settings=settings)
        self.measure_latent_stats(cfg.normalise_clips)

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
    @torch.no_grad()
    def build_latent_pool(self) -> None:
        """Render and encode ``cfg.latent_pool`` clips once, from their own seeded stream (a resumed run rebuilds
        the same pool)."""
        pool_rng = random.Random(self.cfg.seed + 7)
        prompts, latents = [], []
        for start in range(0, self.cfg.latent_pool, 64):
            chunk_prompts, video = self.clips(min(64, self.cfg.latent_pool - start), pool_rng)
            prompts += chunk_prompts
            latents.append(self.normalised(self.pipe.vae.encode(video).latent_dist.mean).cpu())
        self.pool_prompts, self.pool_latents = prompts, torch.cat(latents)
        self.log({"stage": "latent_pool", "clips": len(prompts), "elapsed_s": self.elapsed(),
                  "latent_mean": round(self.pool_latents.mean().item(), 4),
                  "latent_std": round(self.pool_latents.std().item(), 4)})

    def denoiser_loss(self) -> torch.Tensor:
        cfg, pipe = self.cfg, self.pipe
        index = [self.rng.randrange(len(self.pool_prompts)) for _ in range(cfg.batch_size)]
        keep = torch.rand(len(index), generator=self.noise_gen) >= cfg.prompt_dropout
        prompts = [self.pool_prompts[i] if k else "" for i, k in zip(index, keep.tolist(), strict=True)]
        x0 = self.pool_latents[index].to(self.device)
        s = torch.rand(len(index), generator=self.noise_gen).to(self.device)
        eps = torch.randn(x0.shape, generator=self.noise_gen).to(self.device)
        x_t = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * eps
        context = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=MODEL_MAX_LENGTH, device=self.device)
        pred = pipe.transformer(x_t, s * 1000, context, return_dict=False)[0]
        return F.mse_loss(pred, eps - x0)

    def train_denoiser(self, saved: dict | None) -> None:
        self.pipe.vae.eval().requires_grad_(False)
        self.build_latent_pool()
        self.fit_with_ema(list(self.denoiser_modules.values()), self.denoiser_loss, saved, stage="denoiser",
                          evaluate=lambda step: self.evaluate(step, self.cfg.eval_clips_per_prompt),
                          checkpoint=lambda step, opt, ema: self.save_state("denoiser", step, opt, ema))

    def evaluate(self, step: int | str, clips_per_prompt: int) -> dict:
        modules = list(self.denoiser_modules.values())
        training = [m.training for m in modules]
        for m in modules:
            m.eval()
        with torch.no_grad():
            report = evaluate_video_pipeline(self.pipe, clips_per_prompt=clips_per_prompt, seed=10_000)
        for m, was in zip(modules, training, strict=True):
            m.train(was)
        record = {"stage": "eval", "step": step, **report.to_dict()}
        self.log(record)
        return record


def pretrain_video(cfg: VideoPretrainConfig, log_path: str | Path | None = None) -> dict:
    """Train the toy video pipeline (VAE, then denoiser), save it to ``cfg.out_dir`` and return the final held-out
    evaluation. A run interrupted after a checkpoint continues from it when called again with the same settings."""
    run, saved = start_run(_VideoRun, cfg, log_path, asdict(cfg))
    if (cfg.init_from is None or cfg.continue_vae) and (saved is None or saved["stage"] == "vae"):
        run.train_vae(saved)
        saved = None
        run.save_state("denoiser", 0, None, None)  # the VAE stage is done: a resume starts the denoiser
    run.train_denoiser(saved)
    return run.finish(cfg.final_eval_clips_per_prompt)



