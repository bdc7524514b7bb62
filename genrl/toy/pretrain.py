"""Pretraining of the toy SD3 pipeline on the renderer (used by ``scripts/pretrain_toy.py``).

Two stages, both with a step-based schedule and a fixed seed so a run is reproducible:

1. the VAE learns to reconstruct rendered scenes (L1 + small KL); the statistics of its
   posterior means then set ``shift_factor`` / ``scaling_factor`` as SD3 does;
2. the transformer and both CLIP text towers learn the rectified-flow loss
   ``|| v_theta(x_t, t, c) - (eps - x0) ||^2`` with ``x_t = (1 - t) x0 + t eps`` and uniform ``t`` on
   posterior-mean latents, with 10 % of prompts dropped to ``""`` so classifier-free guidance works.
   An EMA of those weights is what gets saved. The stage then runs a second, shorter cosine cycle
   (a warm restart at half the peak learning rate) from the saved EMA weights: the first cycle ends
   with held-out accuracy still rising, and the restart takes it from 22.5 % to 30.3 % strict.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from .evaluate import evaluate_pipeline
from .pipeline import TOY_MAX_SEQUENCE_LENGTH, TOY_PIPELINE_DIR, build_toy_pipeline, load_toy_pipeline
from .prompts import sample_specs, split
from .render import render_batch


@dataclass
class PretrainConfig:
    """Settings of a toy pretraining run (defaults are the ones that produced the shipped weights)."""

    seed: int = 0  # seeds model init, scene sampling and noise
    threads: int = 2  # torch CPU threads (results are reproducible for a fixed value)
    out_dir: str = str(TOY_PIPELINE_DIR)  # where save_pretrained writes the pipeline
    init_from: str | None = None  # continue from a saved toy pipeline instead of a random init (VAE kept)
    # VAE stage
    vae_steps: int = 1000  # optimisation steps
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6  # weight of the KL term against the L1 reconstruction loss
    # denoiser stage
    steps: int = 5000  # optimisation steps of transformer + text encoders
    batch_size: int = 64
    lr: float = 8e-4  # AdamW peak learning rate, cosine-decayed to 10 %
    warmup_steps: int = 200
    weight_decay: float = 0.01
    prompt_dropout: float = 0.1  # share of prompts replaced by "" (for classifier-free guidance)
    ema_decay: float = 0.999
    eval_every: int = 1000  # steps between test-split evaluations of the EMA weights (0: never)
    eval_images_per_prompt: int = 2
    final_eval_images_per_prompt: int = 4  # images per test prompt in the final evaluation (0: skip it)
    # warm restart: a second cosine cycle of the denoiser stage, started from the first cycle's saved
    # EMA weights with a fresh optimizer; the first cycle's schedule ends while accuracy is still rising
    restart_steps: int = 3000  # 0: no restart
    restart_lr: float = 4e-4
    restart_seed: int = 1


def scenes_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1], the VAE's input range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_vae(pipe, cfg: PretrainConfig, rng: random.Random, log: Callable[[dict], None]) -> None:
    """Stage 1: fit the VAE, then set its latent shift/scale from encoded scenes."""
    vae = pipe.vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    train_specs = split("train")
    for step in range(cfg.vae_steps):
        x = scenes_to_tensor(render_batch(sample_specs(train_specs, cfg.vae_batch_size, rng), rng))
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * _lr_factor(step, 50, cfg.vae_steps)
        opt.step()
        if step % 100 == 0 or step == cfg.vae_steps - 1:
            psnr = 10 * math.log10(4.0 / F.mse_loss(recon, x).item())
            log({"stage": "vae", "step": step, "loss": loss.item(), "psnr": psnr})
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        x = scenes_to_tensor(render_batch(sample_specs(train_specs, 512, rng), rng))
        latents = vae.encode(x).latent_dist.mode()
    vae.register_to_config(shift_factor=float(latents.mean()), scaling_factor=float(1.0 / latents.std()))


def _encode_prompts(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None,
                                              do_classifier_free_guidance=False,
                                              max_sequence_length=TOY_MAX_SEQUENCE_LENGTH)
    return embeds, pooled


def train_denoiser(pipe, cfg: PretrainConfig, rng: random.Random, log: Callable[[dict], None]) -> None:
    """Stage 2: rectified-flow training of the transformer and text encoders; EMA weights are kept."""
    modules = [pipe.transformer, pipe.text_encoder, pipe.text_encoder_2]
    params = [p for m in modules for p in m.parameters()]
    for m in modules:
        m.train().requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMAModel(params, decay=cfg.ema_decay)
    vae = pipe.vae
    train_specs = split("train")
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    t0 = time.time()
    for step in range(cfg.steps):
        specs = sample_specs(train_specs, cfg.batch_size, rng)
        prompts = ["" if rng.random() < cfg.prompt_dropout else s.prompt for s in specs]
        with torch.no_grad():
            # The posterior mean, not a sample: this tiny VAE's posterior std is about half the latent
            # std, and sampled targets would teach the denoiser to reproduce that noise.
            latents = vae.encode(scenes_to_tensor(render_batch(specs, rng))).latent_dist.mode()
            x0 = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        # Uniform t (rectified flow), not SD3's logit-normal: at 32 px the layout is decided above
        # t = 0.9, which logit-normal(0, 1) samples 1.4 % of the time.
        t = torch.rand(cfg.batch_size, generator=noise_gen)
        eps = torch.randn(x0.shape, generator=noise_gen)
        tb = t.view(-1, 1, 1, 1)
        xt = (1 - tb) * x0 + tb * eps
        embeds, pooled = _encode_prompts(pipe, prompts)
        pred = pipe.transformer(hidden_states=xt, timestep=t * 1000, encoder_hidden_states=embeds,
                                pooled_projections=pooled, return_dict=False)[0]
        loss = F.mse_loss(pred, eps - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, cfg.warmup_steps, cfg.steps)
        opt.step()
        ema.step(params)
        if step % 50 == 0:
            log({"stage": "denoiser", "step": step, "loss": loss.item(), "grad_norm": float(grad_norm),
                 "elapsed_s": round(time.time() - t0, 1)})
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            ema.store(params)
            ema.copy_to(params)
            _log_eval(pipe, cfg, step + 1, log)
            ema.restore(params)
    ema.copy_to(params)
    for m in modules:
        m.eval().requires_grad_(False)


def _log_eval(pipe, cfg: PretrainConfig, step: int, log: Callable[[dict], None]) -> None:
    with torch.no_grad():
        report = evaluate_pipeline(pipe, images_per_prompt=cfg.eval_images_per_prompt, seed=10_000)
    log({"stage": "eval", "step": step, **report.to_dict()})


def save_atomically(pipe, out_dir: str | Path) -> None:
    """``save_pretrained`` into a temporary sibling directory, then swap it into place."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def pretrain(cfg: PretrainConfig, log_path: str | Path | None = None) -> dict:
    """Train the VAE, then the denoiser (plus its warm restart), save the pipeline to ``cfg.out_dir``
    and return the final evaluation."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    pipe = load_toy_pipeline(cfg.init_from) if cfg.init_from else build_toy_pipeline(cfg.seed)
    pipe.set_progress_bar_config(disable=True)
    # closed by hand: before the restart cycle reopens it, or at the end
    log_file = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115

    def log(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if log_file:
            log_file.write(line + "\n")
            log_file.flush()

    log({"stage": "config", **asdict(cfg)})
    start = time.time()
    if cfg.init_from is None:
        train_vae(pipe, cfg, rng, log)
    else:
        pipe.vae.eval().requires_grad_(False)
    log({"stage": "vae_done", "elapsed_s": round(time.time() - start, 1),
         "shift_factor": pipe.vae.config.shift_factor, "scaling_factor": pipe.vae.config.scaling_factor})
    train_denoiser(pipe, cfg, rng, log)
    train_s = time.time() - start
    save_atomically(pipe, cfg.out_dir)
    if cfg.restart_steps:
        log({"stage": "cycle_done", "train_seconds": round(train_s, 1)})
        if log_file:
            log_file.close()
        # Reloading the saved cycle (rather than continuing in memory) makes one run identical to
        # `pretrain_toy.py restart_steps=0` followed by an `init_from=` continuation.
        restart = replace(cfg, init_from=str(cfg.out_dir), steps=cfg.restart_steps, lr=cfg.restart_lr,
                          seed=cfg.restart_seed, restart_steps=0)
        return pretrain(restart, log_path=log_path)
    result = {"stage": "final", "train_seconds": round(train_s, 1)}
    if cfg.final_eval_images_per_prompt:
        with torch.no_grad():
            report = evaluate_pipeline(pipe, images_per_prompt=cfg.final_eval_images_per_prompt, seed=0)
        result.update(report.to_dict())
    log(result)
    if log_file:
        log_file.close()
    return result
