"""The two-stage pretraining the toy audio and video pipelines share (:class:`TwoStageRun`): a VAE stage on freshly
rendered clips, then a denoiser stage on a pool of clips encoded once, each an AdamW run with an EMA of the weights
(:meth:`genrl.toy.pretrain.RunBase.fit_with_ema`), resumable from ``<out_dir>.resume/``. A subclass says how its
world renders clips, what its losses are and how its pipeline is evaluated.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .pretrain import PretrainError, RunBase, _resolve_device, resume_dir, start_run

#: Settings that only say how a run executes: they may change between a run and its resumption.
EXECUTION_FIELDS = frozenset({"threads", "device", "checkpoint_every", "eval_every", "eval_clips_per_prompt",
                              "final_eval_clips_per_prompt", "fresh"})
#: Settings only the denoiser stage reads: a run interrupted in its VAE stage may resume with others.
DENOISER_FIELDS = frozenset({"latent_pool", "steps", "batch_size", "lr", "warmup_steps", "weight_decay",
                             "prompt_dropout", "ema_decay"})


@dataclass
class StageSettings:
    """The fields :meth:`RunBase.fit_with_ema` reads, for a stage whose settings are not the config's own."""

    steps: int
    lr: float
    warmup_steps: int
    weight_decay: float
    ema_decay: float
    eval_every: int
    checkpoint_every: int


def check_two_stage_settings(cfg: Any, positive: tuple[str, ...] = ()) -> None:
    """:class:`PretrainError` naming the first setting of a two-stage config out of range (``positive``: more
    fields that must be >= 1)."""
    if not 0.0 <= cfg.prompt_dropout < 1.0:
        raise PretrainError(f"prompt_dropout={cfg.prompt_dropout} must be in [0, 1)")
    for key in ("vae_steps", "steps", "checkpoint_every", "eval_every"):
        if getattr(cfg, key) < 0:
            raise PretrainError(f"{key}={getattr(cfg, key)} must be >= 0")
    for key in ("vae_batch_size", "batch_size", *positive, "normalise_clips", "latent_pool"):
        if getattr(cfg, key) < 1:
            raise PretrainError(f"{key}={getattr(cfg, key)} must be >= 1")


def stage_recipe(cfg, ignored: frozenset[str]) -> dict:
    """A run's settings (a config dataclass or its saved dict) but the ``ignored`` ones: what a resumed run must
    match."""
    settings = cfg if isinstance(cfg, dict) else asdict(cfg)
    return {k: v for k, v in settings.items() if k not in ignored}


def media_recipe(cfg, stage: str = "denoiser") -> dict:
    """The settings that decide what a run computes up to the end of ``stage`` (a resumed run must match them)."""
    return stage_recipe(cfg, EXECUTION_FIELDS | (DENOISER_FIELDS if stage == "vae" else frozenset()))


class TwoStageRun(RunBase):
    """One run of a toy media pipeline's pretraining: the pipeline, its random streams, the log and the resumable
    state. The config has the fields of the audio and video pretraining configs (``vae_*``, ``latent_pool``,
    ``normalise_clips``, the denoiser's ``steps`` ...). A subclass implements the methods that raise here."""

    def __init__(self, cfg: Any, log_path: str | Path | None) -> None:
        self.cfg = cfg
        self.device = _resolve_device(cfg.device)
        self.rng = random.Random(cfg.seed)  # prompts and renders
        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)  # noise levels, noise and dropout, on the CPU
        self.log_path = Path(log_path) if log_path else None
        self.state_dir = resume_dir(cfg.out_dir)
        self.specs = self.pretraining_specs()
        self.pipe = self.load_pipeline(cfg.init_from) if cfg.init_from else self.build_pipeline(cfg.seed)
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(self.device)
        self.denoiser_modules = self.denoiser_components()
        self.start, self.elapsed_before = time.time(), 0.0

    # ------------------------------------------------------------------ what a world supplies
    def pretraining_specs(self) -> list:
        """Every prompt spec the pipeline is pretrained on."""
        raise NotImplementedError

    def build_pipeline(self, seed: int):
        raise NotImplementedError

    def load_pipeline(self, path: str):
        raise NotImplementedError

    def denoiser_components(self) -> dict[str, torch.nn.Module]:
        """The modules the denoiser stage trains, by pipeline component name."""
        raise NotImplementedError

    def render(self, specs: list, rng: random.Random) -> torch.Tensor:
        """Fresh clips of ``specs`` as the VAE takes them, on the run's device."""
        raise NotImplementedError

    def vae_loss(self) -> torch.Tensor:
        raise NotImplementedError

    def vae_modules(self) -> list[torch.nn.Module]:
        """The modules the VAE stage trains: the whole VAE unless a world's config keeps a part of it fixed."""
        return [self.pipe.vae]

    def after_vae(self) -> None:
        """Fit the latents' normalisation once the VAE is trained (and log its reconstruction)."""
        raise NotImplementedError

    def pool_latents(self, media: torch.Tensor) -> torch.Tensor:
        """The latents the denoiser learns to generate, of a batch of rendered clips."""
        return self.pipe.vae.encode(media).latent_dist.mean

    def denoiser_loss(self) -> torch.Tensor:
        raise NotImplementedError

    def evaluate_pipeline(self, clips_per_prompt: int, seed: int):
        """The held-out evaluation report of the current pipeline."""
        raise NotImplementedError

    def extra_state(self) -> dict:
        """Entries the resumable state keeps beyond the weights (e.g. statistics held in a config)."""
        return {}

    def restore_extra_state(self, state: dict) -> None:
        """Put back what :meth:`extra_state` saved."""

    # ------------------------------------------------------------------ resumable state
    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.pipe.vae, **self.denoiser_modules}

    def save_state(self, stage: str, step: int, opt: torch.optim.Optimizer | None, ema) -> None:
        if self.cfg.checkpoint_every:
            self.write_run_state(self._modules(), media_recipe(self.cfg), step, opt, ema, stage=stage,
                                 **self.extra_state())

    def load_state(self) -> dict | None:
        state = self.read_run_state(self._modules(), lambda state: (media_recipe(state["recipe"], state["stage"]),
                                                                    media_recipe(self.cfg, state["stage"])))
        if state is not None:
            self.restore_extra_state(state)
        return state

    # ------------------------------------------------------------------ data
    def clips(self, n: int, rng: random.Random | None = None) -> tuple[list[str], torch.Tensor]:
        """``n`` fresh clips of random prompts: their prompts and the clips as the VAE takes them."""
        rng = rng or self.rng
        specs = [rng.choice(self.specs) for _ in range(n)]
        return [s.prompt for s in specs], self.render(specs, rng)

    # ------------------------------------------------------------------ stages
    def train_vae(self, saved: dict | None) -> None:
        cfg = self.cfg
        settings = StageSettings(cfg.vae_steps, cfg.vae_lr, cfg.vae_warmup_steps, 0.0, cfg.vae_ema_decay,
                                 eval_every=0, checkpoint_every=cfg.checkpoint_every)
        self.fit_with_ema(self.vae_modules(), self.vae_loss, saved, stage="vae", evaluate=lambda step: None,
                          checkpoint=lambda step, opt, ema: self.save_state("vae", step, opt, ema), settings=settings)
        self.after_vae()

    @torch.no_grad()
    def build_latent_pool(self) -> None:
        """Render and encode ``cfg.latent_pool`` clips once, from their own seeded stream (a resumed run rebuilds
        the same pool)."""
        pool_rng = random.Random(self.cfg.seed + 7)
        prompts, latents = [], []
        for start in range(0, self.cfg.latent_pool, 64):
            chunk_prompts, media = self.clips(min(64, self.cfg.latent_pool - start), pool_rng)
            prompts += chunk_prompts
            latents.append(self.pool_latents(media).cpu())
        self.pool_prompts, self.pool = prompts, torch.cat(latents)
        self.log({"stage": "latent_pool", "clips": len(prompts), "elapsed_s": self.elapsed(),
                  "latent_mean": round(self.pool.mean().item(), 4), "latent_std": round(self.pool.std().item(), 4)})

    def pool_batch(self) -> tuple[list[str], torch.Tensor]:
        """``cfg.batch_size`` pooled clips: their prompts and latents on the run's device."""
        index = [self.rng.randrange(len(self.pool_prompts)) for _ in range(self.cfg.batch_size)]
        return [self.pool_prompts[i] for i in index], self.pool[index].to(self.device)

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
            report = self.evaluate_pipeline(clips_per_prompt, seed=10_000)
        for m, was in zip(modules, training, strict=True):
            m.train(was)
        record = {"stage": "eval", "step": step, **report.to_dict()}
        self.log(record)
        return record


def pretrain_two_stage(run_class: type[TwoStageRun], cfg: Any, log_path: str | Path | None) -> dict:
    """Train a toy media pipeline (VAE unless ``cfg.init_from`` keeps one and ``cfg.continue_vae`` is off, then
    the denoiser), save it to ``cfg.out_dir`` and return the final held-out evaluation. A run interrupted after a
    checkpoint continues from it when called again with the same settings."""
    run, saved = start_run(run_class, cfg, log_path, asdict(cfg))
    vae_stage = cfg.init_from is None or getattr(cfg, "continue_vae", False)
    if vae_stage and (saved is None or saved["stage"] == "vae"):
        run.train_vae(saved)
        saved = None
        run.save_state("denoiser", 0, None, None)  # the VAE stage is done: a resume starts the denoiser
    run.train_denoiser(saved)
    return run.finish(cfg.final_eval_clips_per_prompt)
