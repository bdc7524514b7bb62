"""Pretraining of the toy SD3 pipeline on the renderer (used by ``scripts/pretrain_toy.py``).

Two stages, both with a step-based schedule and a fixed seed so a run is reproducible:

1. the VAE learns to reconstruct rendered scenes (L1 + small KL); the statistics of its
   posterior means then set ``shift_factor`` / ``scaling_factor`` as SD3 does;
2. the transformer and both CLIP text towers learn the rectified-flow loss
   ``|| v_theta(x_t, t, c) - (eps - x0) ||^2`` with ``x_t = (1 - t) x0 + t eps`` and uniform ``t`` on
   posterior-mean latents, with 10 % of prompts dropped to ``""`` so classifier-free guidance works.
   An EMA of those weights is what gets saved;
3. the null-T5 stage: the pipeline's T5 slot holds a T5 encoder that emits zeros (SD3's dropped T5,
   :func:`genrl.toy.pipeline.null_t5_encoder`), and the transformer is distilled from its own copy so that
   any number of those zero tokens after the text tokens gives the velocity it gives with none. The stock
   pipeline's default call (256 T5 tokens) then draws what genrl's T5-free sampling draws.

The scenes come from *every* prompt of the world (:func:`rewards.toyworld.prompts.pretraining_specs`),
families drawn uniformly; the RL splits are held out from RL, not from pretraining. A share
``caption_noise`` of the compositional captions is wrong the way web captions are (a relation
flipped, the two colours swapped, a count off by one, an object misnamed; see :func:`noisy_caption`),
so prompt following is learned but imperfect; ``reading_order`` lays two-object scenes out the way their
captions read (:func:`in_reading_order`), so that a small transformer can bind each noun to a place.

A run is resumable: every ``checkpoint_every`` steps the whole state (weights, optimizer, EMA,
random generators, the log's length) is written atomically to ``<out_dir>.resume/``, and running
the same command again continues from there, to the same weights as an uninterrupted run (for a
fixed device and thread count). On a GPU (``device=auto`` picks one) the run is the same recipe,
not the same bits.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from genrl.models.sd3 import t5_tokens_dropped
from rewards.toyworld.prompts import pretraining_specs, sample_specs
from rewards.toyworld.render import render_batch
from rewards.toyworld.world import FAMILIES, SHAPES, ObjectSpec, PromptSpec

from .evaluate import evaluate_pipeline
from .pipeline import TOY_MAX_SEQUENCE_LENGTH, TOY_PIPELINE_DIR, build_toy_pipeline, load_toy_pipeline
from .runlog import emit_record

#: Families a float ``caption_noise`` mislabels; a mapping may also name these.
FLOAT_NOISE_FAMILIES = ("position", "color_attr", "counting")
NOISY_FAMILIES = (*FLOAT_NOISE_FAMILIES, "two_object")
#: Relations a flipped caption states instead.
FLIPPED_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
#: Fields that only say how a run executes, not what it computes: they may change between a run
#: and its resumption.
EXECUTION_FIELDS = frozenset({"threads", "device", "checkpoint_every", "eval_every", "eval_images_per_prompt",
                              "final_eval_images_per_prompt", "fresh"})
#: Fields only the denoiser stage reads: a run interrupted in its VAE stage may resume with others.
DENOISER_FIELDS = frozenset({"caption_noise", "family_weights", "reading_order", "steps", "batch_size", "lr", "warmup_steps", "weight_decay",
                             "prompt_dropout", "ema_decay"})
#: Fields only the null-T5 stage reads: a run interrupted before it may resume with others.
NULL_T5_FIELDS = frozenset({"null_t5_steps", "null_t5_batch_size", "null_t5_lr", "null_t5_max_tokens"})
STATE_FILE = "state.pt"


class PretrainError(ValueError):
    """A pretraining run that cannot start or resume as asked (the message names the culprit)."""


@dataclass
class PretrainConfig:
    """Settings of a toy pretraining run (defaults are the ones that produced the shipped weights)."""

    seed: int = 0  # seeds model init, scene sampling and noise
    threads: int = 2  # torch CPU threads (results are reproducible for a fixed value)
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "cuda:1", ...
    out_dir: str = str(TOY_PIPELINE_DIR)  # where save_pretrained writes the pipeline
    init_from: str | None = None  # continue from a saved toy pipeline instead of a random init (VAE kept)
    # share of position / colour-attribution / counting captions made wrong, or a rate per family
    # ({position: 0.5, two_object: 0.4}; two_object is only mislabelled this way)
    caption_noise: float | dict[str, float] = 0.1
    # relative weight of each prompt family in the denoiser's scenes (a family left out weighs 1; empty:
    # families drawn uniformly, the shipped recipe)
    family_weights: dict[str, float] = field(default_factory=dict)
    # share of the two-object and colour-attribution scenes laid out the way their captions read, the
    # first-named object clearly left of the second (0: anywhere, the first stages' recipe)
    reading_order: float = 0.0
    checkpoint_every: int = 250  # steps between resumable checkpoints in <out_dir>.resume/ (0: none)
    fresh: bool = False  # discard an existing resumable state of out_dir and start over
    # VAE stage
    vae_steps: int = 1200  # optimisation steps
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6  # weight of the KL term against the L1 reconstruction loss
    # denoiser stage
    steps: int = 4000  # optimisation steps of transformer + text encoders
    batch_size: int = 64
    lr: float = 8e-4  # AdamW peak learning rate, cosine-decayed to 10 %
    warmup_steps: int = 200
    weight_decay: float = 0.01
    prompt_dropout: float = 0.1  # share of prompts replaced by "" (for classifier-free guidance)
    ema_decay: float = 0.999
    eval_every: int = 1000  # steps between test-split evaluations of the EMA weights (0: never)
    eval_images_per_prompt: int = 2
    final_eval_images_per_prompt: int = 4  # images per test prompt in the final evaluation (0: skip it)
    # null-T5 stage
    null_t5_steps: int = 600  # distillation steps (0: skip the stage)
    null_t5_batch_size: int = 32
    null_t5_lr: float = 2e-4  # AdamW peak learning rate, cosine-decayed to 10 %
    null_t5_max_tokens: int = 256  # zero T5 tokens per batch drawn from 1..this (the stock pipeline's default call: 256)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.family_weights) - set(FAMILIES))
        if unknown:
            raise PretrainError(f"family_weights names unknown family {unknown[0]!r}; families: {', '.join(FAMILIES)}")
        if any(w < 0 for w in self.family_weights.values()) or (
                self.family_weights and not any({**dict.fromkeys(FAMILIES, 1.0), **self.family_weights}.values())):
            raise PretrainError("family_weights must be >= 0 and not all 0")
        if not 0.0 <= self.reading_order <= 1.0:
            raise PretrainError(f"reading_order={self.reading_order} must be in [0, 1]")
        if isinstance(self.caption_noise, dict):
            unknown = sorted(set(self.caption_noise) - set(NOISY_FAMILIES))
            if unknown:
                raise PretrainError(f"caption_noise names family {unknown[0]!r}, which captions cannot mislabel; "
                                    f"families: {', '.join(NOISY_FAMILIES)}")
            rates = self.caption_noise
        else:
            rates = {"all": self.caption_noise}
        for family, value in rates.items():
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise PretrainError(f"caption_noise rate {value!r} ({family}) must be in [0, 1]")
        if self.null_t5_steps and self.null_t5_max_tokens < 1:
            raise PretrainError(f"null_t5_max_tokens={self.null_t5_max_tokens} must be >= 1")
        for key in ("vae_steps", "steps", "null_t5_steps", "checkpoint_every", "eval_every"):
            if getattr(self, key) < 0:
                raise PretrainError(f"{key}={getattr(self, key)} must be >= 0")


def noisy_caption(spec: PromptSpec, rng: random.Random, rate: float | Mapping[str, float]) -> str:
    """The caption of a rendered ``spec``: its prompt, or with probability ``rate`` a wrong one.

    A float ``rate`` mislabels the compositional families, each by the error a detector-based
    metric counts: position (the relation flipped), colour attribution (the two colours swapped) and
    counting (the count off by one, 2 <-> 3). A mapping gives each family its own rate and may also
    name ``two_object`` (one of the two objects misnamed as a shape the scene does not hold). Single
    objects and single colours always stay exact, so the base model learns to draw everything the
    prompts name.
    """
    family_rate = rate.get(spec.family, 0.0) if isinstance(rate, Mapping) else (
        rate if spec.family in FLOAT_NOISE_FAMILIES else 0.0)
    if not family_rate or rng.random() >= family_rate:
        return spec.prompt
    if spec.family == "position":
        wrong = replace(spec, relation=FLIPPED_RELATIONS[spec.relation], prompt="")
    elif spec.family == "color_attr":
        a, b = spec.objects
        wrong = replace(spec, objects=(replace(a, color=b.color), replace(b, color=a.color)), prompt="")
    elif spec.family == "two_object":
        objects = list(spec.objects)
        i = rng.randrange(2)
        others = [s for s in SHAPES if s not in {o.shape for o in objects}]
        objects[i] = replace(objects[i], shape=rng.choice(others))
        wrong = replace(spec, objects=tuple(objects), prompt="")
    else:
        (obj,) = spec.objects
        wrong = replace(spec, objects=(ObjectSpec(obj.shape, 3 if obj.count == 2 else 2, obj.color),), prompt="")
    return wrong.prompt


#: Families whose scenes ``reading_order`` lays out left to right (position fixes its own layout).
READING_ORDER_FAMILIES = ("two_object", "color_attr")


def in_reading_order(spec: PromptSpec) -> PromptSpec:
    """The scene of a two-object ``spec`` as its caption reads: the first-named object left of the second.

    Only the layout changes (the renderer makes a relation hold clearly); the caption stays the spec's
    own prompt, which names no relation. A small transformer binds each noun to a place far more
    easily than it decides, object by object, which of two nouns to draw where.
    """
    return replace(spec, relation="left of")


def scenes_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1], the VAE's input range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def resume_dir(out_dir: str | Path) -> Path:
    """Where a run writing ``out_dir`` keeps its resumable state."""
    out = Path(out_dir)
    return out.with_name(out.name + ".resume")


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PretrainError(f"device={name!r}, but torch sees no CUDA device")
    return device


def _recipe(settings: dict, stage: str = "null_t5") -> dict:
    """The settings that decide what a run computes up to the end of ``stage`` (a resumed run must match them)."""
    later = {"vae": DENOISER_FIELDS | NULL_T5_FIELDS, "denoiser": NULL_T5_FIELDS}.get(stage, frozenset())
    ignored = EXECUTION_FIELDS | later
    return {k: v for k, v in settings.items() if k not in ignored}


class RunBase:
    """What every pretraining run shares: its JSONL log, its training clock and the EMA training loop.

    A subclass sets ``cfg`` (with ``steps``, ``lr``, ``warmup_steps``, ``weight_decay``, ``ema_decay``,
    ``eval_every``, ``checkpoint_every``, ``out_dir`` and ``fresh``), ``pipe``, ``state_dir``, ``rng``, ``noise_gen``,
    ``device``, ``log_path``, ``start`` and ``elapsed_before``.
    """

    cfg: Any
    pipe: Any
    state_dir: Path
    rng: random.Random
    noise_gen: torch.Generator
    device: torch.device
    log_path: Path | None
    start: float
    elapsed_before: float

    def log(self, record: dict) -> None:
        emit_record(record, self.log_path or None)

    def elapsed(self) -> float:
        return round(self.elapsed_before + time.time() - self.start, 1)

    def write_run_state(self, modules: dict[str, torch.nn.Module], recipe: dict, step: int,
                        opt: torch.optim.Optimizer | None, ema: EMAModel | None, **extra: Any) -> None:
        """Write the resumable state (``modules``' weights, optimizer, EMA, every random stream, the log's length
        and ``extra`` entries) atomically into ``state_dir``, so a kill leaves the previous one whole."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {"recipe": recipe, "step": step, "elapsed_s": self.elapsed(),
                 "modules": {k: m.state_dict() for k, m in modules.items()},
                 "optimizer": opt.state_dict() if opt is not None else None,
                 "ema": ema.state_dict() if ema is not None else None,
                 **random_states(self.rng, self.noise_gen, self.device),
                 "log_bytes": self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0, **extra}
        write_atomically(state, self.state_dir / STATE_FILE)

    def read_run_state(self, modules: dict[str, torch.nn.Module],
                       recipes: Callable[[dict], tuple[dict, dict]]) -> dict | None:
        """The state :meth:`write_run_state` left (None if there is none, or ``cfg.fresh``): refused by
        :func:`check_recipe` when ``recipes(state)`` (saved, wanted) differ, else loaded into ``modules``, the
        random streams, the log (cut back to the state) and the clock."""
        state = read_state(self.state_dir, self.cfg.fresh)
        if state is None:
            return None
        check_recipe(self.state_dir, *recipes(state))
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        restore_random_states(state, self.rng, self.noise_gen, self.device)
        truncate_log(self.log_path, state["log_bytes"])
        self.elapsed_before = float(state["elapsed_s"])
        self.log({"stage": "resume", **({"from_stage": state["stage"]} if "stage" in state else {}),
                  "step": state["step"], "state": str(self.state_dir / STATE_FILE)})
        return state

    def finish(self, final_eval: int) -> dict:
        """Save the trained pipeline to ``cfg.out_dir`` (atomically), drop the resumable state, then evaluate the
        saved weights with ``final_eval`` samples per prompt (0: none) through the subclass's
        ``evaluate(step, n)``; logs and returns the final record."""
        train_s = self.elapsed()
        self.pipe.to("cpu")
        save_atomically(self.pipe, self.cfg.out_dir)
        shutil.rmtree(self.state_dir, ignore_errors=True)  # the pipeline is complete: nothing left to resume
        result = {"stage": "final", "train_seconds": train_s, "device": str(self.device)}
        if final_eval:
            result.update({k: v for k, v in self.evaluate("final", final_eval).items() if k not in ("stage", "step")})
        self.log(result)
        return result

    def fit_with_ema(self, modules: list[torch.nn.Module], loss_fn: Callable[[], torch.Tensor], saved: dict | None, *,
                     stage: str, evaluate: Callable[[int], None],
                     checkpoint: Callable[[int, torch.optim.Optimizer, EMAModel], None], settings: Any = None) -> None:
        """AdamW on ``modules`` for ``cfg.steps`` steps of ``loss_fn()`` (cosine lr, grad clip 1) with an EMA that
        ``evaluate(step)`` sees every ``cfg.eval_every`` steps and that the modules hold at the end;
        ``checkpoint(step, opt, ema)`` every ``cfg.checkpoint_every`` steps; continues from ``saved``.
        ``settings`` replaces ``self.cfg`` as the source of those fields (a run with several such stages)."""
        cfg = settings if settings is not None else self.cfg
        params = [p for m in modules for p in m.parameters()]
        for m in modules:
            m.train().requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        ema = EMAModel(params, decay=cfg.ema_decay)
        start = 0
        if saved is not None and saved["optimizer"] is not None:
            opt.load_state_dict(saved["optimizer"])
            ema.load_state_dict(saved["ema"])
            ema.to(self.device)
            start = saved["step"]
        for step in range(start, cfg.steps):
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, cfg.warmup_steps, cfg.steps)
            opt.step()
            ema.step(params)
            if step % 50 == 0:
                self.log({"stage": stage, "step": step, "loss": loss.item(), "grad_norm": float(grad_norm),
                          "elapsed_s": self.elapsed()})
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
                ema.store(params)
                ema.copy_to(params)
                evaluate(step + 1)
                ema.restore(params)
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                checkpoint(step + 1, opt, ema)
        ema.copy_to(params)
        for m in modules:
            m.eval().requires_grad_(False)


class _Run(RunBase):
    """One pretraining run: the pipeline, its random generators, the log and the resumable state."""

    def __init__(self, cfg: PretrainConfig, log_path: str | Path | None) -> None:
        self.cfg = cfg
        self.device = _resolve_device(cfg.device)
        self.rng = random.Random(cfg.seed)  # scenes and captions
        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)  # t and eps, drawn on the CPU
        self.log_path = Path(log_path) if log_path else None
        self.state_dir = resume_dir(cfg.out_dir)
        self.specs = pretraining_specs()
        self.pipe = load_toy_pipeline(cfg.init_from) if cfg.init_from else build_toy_pipeline(cfg.seed)
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(self.device)
        self.denoiser_modules = [self.pipe.transformer, self.pipe.text_encoder, self.pipe.text_encoder_2]
        self.start = time.time()
        self.elapsed_before = 0.0  # training seconds of earlier sittings of a resumed run

    # ------------------------------------------------------------------ resumable state
    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.pipe.vae, "transformer": self.pipe.transformer,
                "text_encoder": self.pipe.text_encoder, "text_encoder_2": self.pipe.text_encoder_2}

    def save_state(self, stage: str, step: int, opt: torch.optim.Optimizer | None, ema: EMAModel | None,
                   teacher: torch.nn.Module | None = None) -> None:
        """Write the whole state atomically (temporary file, then rename), so a kill leaves the previous one."""
        if not self.cfg.checkpoint_every:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "recipe": _recipe(asdict(self.cfg)), "stage": stage, "step": step, "elapsed_s": self.elapsed(),
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "vae_factors": [self.pipe.vae.config.shift_factor, self.pipe.vae.config.scaling_factor],
            "optimizer": opt.state_dict() if opt is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "teacher": teacher.state_dict() if teacher is not None else None,
            **random_states(self.rng, self.noise_gen, self.device),
            "log_bytes": self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0,
        }
        write_atomically(state, self.state_dir / STATE_FILE)

    def load_state(self) -> dict | None:
        """The saved state of an interrupted run with this recipe (None if there is none to resume)."""
        state = read_state(self.state_dir, self.cfg.fresh)
        if state is None:
            return None
        check_recipe(self.state_dir, _recipe(state["recipe"], state["stage"]), _recipe(asdict(self.cfg), state["stage"]))
        for key, module in self._modules().items():
            module.load_state_dict(state["modules"][key])
        shift, scale = state["vae_factors"]
        self.pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
        restore_random_states(state, self.rng, self.noise_gen, self.device)
        truncate_log(self.log_path, state["log_bytes"])
        self.elapsed_before = float(state["elapsed_s"])
        self.log({"stage": "resume", "from_stage": state["stage"], "step": state["step"], "state": str(self.state_dir / STATE_FILE)})
        return state

    def _due(self, done: int, total: int) -> bool:
        every = self.cfg.checkpoint_every
        return bool(every) and done % every == 0 and done < total

    # ------------------------------------------------------------------------------- stages
    def train_vae(self, saved: dict | None) -> None:
        """Stage 1: fit the VAE, then set its latent shift/scale from encoded scenes."""
        cfg, vae = self.cfg, self.pipe.vae.train()
        opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
        start = 0
        if saved is not None:
            opt.load_state_dict(saved["optimizer"])
            start = saved["step"]
        for step in range(start, cfg.vae_steps):
            x = self._scenes(sample_specs(self.specs, cfg.vae_batch_size, self.rng))
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
                self.log({"stage": "vae", "step": step, "loss": loss.item(), "psnr": psnr})
            if self._due(step + 1, cfg.vae_steps):
                self.save_state("vae", step + 1, opt, None)
        vae.eval().requires_grad_(False)
        with torch.no_grad():
            x = self._scenes(sample_specs(self.specs, 512, self.rng))
            latents = vae.encode(x).latent_dist.mode()
        vae.register_to_config(shift_factor=float(latents.mean()), scaling_factor=float(1.0 / latents.std()))

    def train_denoiser(self, saved: dict | None) -> None:
        """Stage 2: rectified-flow training of the transformer and text encoders; EMA weights are kept."""
        self.pipe.vae.eval().requires_grad_(False)
        self.fit_with_ema(self.denoiser_modules, self._denoiser_loss, saved, stage="denoiser", evaluate=self._log_eval,
                          checkpoint=lambda step, opt, ema: self.save_state("denoiser", step, opt, ema))

    def _denoiser_loss(self) -> torch.Tensor:
        prompts, x0, t, eps, xt = self._flow_batch(self.cfg.batch_size)
        embeds, pooled = self._encode_prompts(prompts)
        pred = self.pipe.transformer(hidden_states=xt, timestep=t * 1000, encoder_hidden_states=embeds,
                                     pooled_projections=pooled, return_dict=False)[0]
        return F.mse_loss(pred, eps - x0)

    def distill_null_t5(self, saved: dict | None) -> None:
        """Stage 3: any number of zero T5 tokens after the text tokens gives the velocity of none.

        The teacher is the transformer as the denoiser stage left it; the student, initialised from it, is
        fitted to the teacher's T5-free velocity both without T5 tokens and with ``n`` zero tokens, ``n`` drawn
        from 1..``null_t5_max_tokens`` per batch, on the denoiser stage's scenes, captions and noise levels.
        """
        cfg = self.cfg
        self.attach_null_t5()
        student = self.pipe.transformer.train().requires_grad_(True)
        teacher = copy.deepcopy(student).eval().requires_grad_(False)
        params = list(student.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.null_t5_lr, weight_decay=0.0)
        start = 0
        if saved is not None and saved["teacher"] is not None:
            teacher.load_state_dict(saved["teacher"])
            opt.load_state_dict(saved["optimizer"])
            start = saved["step"]
        for step in range(start, cfg.null_t5_steps):
            prompts, _, t, _, xt = self._flow_batch(cfg.null_t5_batch_size)
            n = int(torch.randint(1, cfg.null_t5_max_tokens + 1, (1,), generator=self.noise_gen))
            embeds, pooled = self._encode_prompts(prompts)
            # the null T5's n tokens, as the pipeline appends them: zeros after the text tokens
            padded = torch.cat([embeds, embeds.new_zeros(embeds.shape[0], n, embeds.shape[2])], dim=1)
            kwargs = dict(hidden_states=xt, timestep=t * 1000, pooled_projections=pooled, return_dict=False)
            with torch.no_grad():
                target = teacher(encoder_hidden_states=embeds, **kwargs)[0]
            loss_none = F.mse_loss(student(encoder_hidden_states=embeds, **kwargs)[0], target)
            loss_null = F.mse_loss(student(encoder_hidden_states=padded, **kwargs)[0], target)
            opt.zero_grad(set_to_none=True)
            (loss_none + loss_null).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            for group in opt.param_groups:
                group["lr"] = cfg.null_t5_lr * _lr_factor(step, 20, cfg.null_t5_steps)
            opt.step()
            if step % 25 == 0 or step == cfg.null_t5_steps - 1:
                self.log({"stage": "null_t5", "step": step, "loss": (loss_none + loss_null).item(),
                          "loss_no_t5": loss_none.item(), "loss_null_t5": loss_null.item(), "t5_tokens": n,
                          "elapsed_s": self.elapsed()})
            if self._due(step + 1, cfg.null_t5_steps):
                self.save_state("null_t5", step + 1, opt, None, teacher)
        student.eval().requires_grad_(False)

    def attach_null_t5(self) -> None:
        """Give a pipeline without a T5 slot (one saved before the slot existed) the null T5 and a tokenizer."""
        if getattr(self.pipe, "text_encoder_3", None) is not None:
            return
        from .pipeline import null_t5_encoder
        from .tokenizer import build_toy_tokenizer

        tokenizer = build_toy_tokenizer()
        self.pipe.register_modules(text_encoder_3=null_t5_encoder(len(tokenizer)).to(self.device),
                                   tokenizer_3=tokenizer)

    def _flow_batch(self, batch_size: int) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of the denoiser's data: captions (some wrong, some dropped), latents x0, t, noise and x_t."""
        cfg, vae = self.cfg, self.pipe.vae
        specs = sample_specs(self.specs, batch_size, self.rng, cfg.family_weights or None)
        prompts = [noisy_caption(s, self.rng, cfg.caption_noise) for s in specs]
        if cfg.reading_order:
            specs = [in_reading_order(s) if s.family in READING_ORDER_FAMILIES and self.rng.random() < cfg.reading_order
                     else s for s in specs]
        prompts = ["" if self.rng.random() < cfg.prompt_dropout else p for p in prompts]
        with torch.no_grad():
            # The posterior mean, not a sample: this tiny VAE's posterior std is a sizeable share of
            # the latent std, and sampled targets would teach the denoiser to reproduce that noise.
            latents = vae.encode(self._scenes(specs)).latent_dist.mode()
            x0 = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        # Uniform t (rectified flow), not SD3's logit-normal: at 32 px the layout is decided above
        # t = 0.9, which logit-normal(0, 1) samples 1.4 % of the time.
        t = torch.rand(batch_size, generator=self.noise_gen).to(self.device)
        eps = torch.randn(x0.shape, generator=self.noise_gen).to(self.device)
        tb = t.view(-1, 1, 1, 1)
        return prompts, x0, t, eps, (1 - tb) * x0 + tb * eps

    def _scenes(self, specs: list[PromptSpec]) -> torch.Tensor:
        return scenes_to_tensor(render_batch(specs, self.rng)).to(self.device)

    def _encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        with t5_tokens_dropped(self.pipe, TOY_MAX_SEQUENCE_LENGTH):
            embeds, _, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None,
                                                           do_classifier_free_guidance=False, device=self.device,
                                                           max_sequence_length=TOY_MAX_SEQUENCE_LENGTH)
        return embeds, pooled

    def _log_eval(self, step: int) -> None:
        with torch.no_grad():
            report = evaluate_pipeline(self.pipe, images_per_prompt=self.cfg.eval_images_per_prompt, seed=10_000)
        self.log({"stage": "eval", "step": step, **report.to_dict()})


def _as_tuple(value):
    """``random.Random.getstate()`` as saved (torch.save keeps tuples; lists are tolerated)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def random_states(rng: random.Random, noise_gen: torch.Generator, device: torch.device) -> dict:
    """Every random stream a pretraining run draws from, for its resumable state."""
    return {"rng": rng.getstate(), "noise_gen": noise_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_random_states(state: dict, rng: random.Random, noise_gen: torch.Generator, device: torch.device) -> None:
    """Inverse of :func:`random_states`."""
    rng.setstate(_as_tuple(state["rng"]))
    noise_gen.set_state(state["noise_gen"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def write_atomically(state: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill leaves the previous state whole."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_state(state_dir: Path, fresh: bool) -> dict | None:
    """The resumable state in ``state_dir`` (None when there is none, or ``fresh`` discards it)."""
    path = state_dir / STATE_FILE
    if fresh:
        shutil.rmtree(state_dir, ignore_errors=True)
        return None
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged state must not be half-used; say which file and what to do
        raise PretrainError(f"cannot read {path} ({type(err).__name__}); delete it or pass fresh=true") from err


def check_recipe(state_dir: Path, saved: dict, wanted: dict) -> None:
    """Refuse to resume a state saved with other settings, naming them."""
    changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if changed:
        raise PretrainError(f"{state_dir} holds an interrupted run with other settings ({', '.join(changed)}); "
                            "run it with those settings to resume, or pass fresh=true to start over")


def truncate_log(log_path: Path | None, size: int) -> None:
    """Drop the log records written after a saved state (their steps will be re-done)."""
    if log_path and log_path.exists():
        with open(log_path, "r+b") as fh:
            fh.truncate(size)


def strip_local_paths(folder: Path) -> None:
    """Drop ``_name_or_path`` (the local folder a model was loaded from) from a saved pipeline's JSON configs:
    shipped weights should not carry the path of the machine that made them."""
    for path in folder.rglob("*.json"):
        config = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(config, dict) and "_name_or_path" in config:
            del config["_name_or_path"]
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_atomically(pipe, out_dir: str | Path) -> None:
    """``save_pretrained`` into a temporary sibling directory, then swap it into place."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    strip_local_paths(tmp)
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def start_run(run_class: type, cfg: Any, log_path: str | Path | None, settings: dict) -> tuple[Any, dict | None]:
    """Set the threads and seed, build ``run_class(cfg, log_path)`` and load its resumable state; a fresh run
    starts its log anew (one file, one run) with a ``config`` record of ``settings``."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = run_class(cfg, log_path)
    saved = run.load_state()
    if saved is None:
        if log_path and Path(log_path).exists():
            Path(log_path).unlink()
        run.log({"stage": "config", **settings})
    return run, saved


def pretrain(cfg: PretrainConfig, log_path: str | Path | None = None) -> dict:
    """Train the VAE, then the denoiser, save the pipeline to ``cfg.out_dir`` and return the final evaluation.

    A run interrupted after a checkpoint continues from it when called again with the same settings.
    """
    run, saved = start_run(_Run, cfg, log_path, asdict(cfg))
    if saved is None or saved["stage"] == "vae":  # else the log already holds the VAE stage's end
        if cfg.init_from is None:
            run.train_vae(saved)
            saved = None
            run.save_state("denoiser", 0, None, None)  # the VAE stage is done: a resume starts the denoiser
        run.log({"stage": "vae_done", "elapsed_s": run.elapsed(), "shift_factor": run.pipe.vae.config.shift_factor,
                 "scaling_factor": run.pipe.vae.config.scaling_factor})
    run.pipe.vae.eval().requires_grad_(False)
    if saved is None or saved["stage"] != "null_t5":
        run.train_denoiser(saved)
        saved = None
        if cfg.null_t5_steps:
            run.save_state("null_t5", 0, None, None)  # the denoiser stage is done: a resume starts the next one
    if cfg.null_t5_steps:
        run.distill_null_t5(saved)
    else:
        run.attach_null_t5()
    train_s = run.elapsed()
    run.pipe.to("cpu")
    save_atomically(run.pipe, cfg.out_dir)
    shutil.rmtree(run.state_dir, ignore_errors=True)  # the pipeline is complete: nothing left to resume
    result = {"stage": "final", "train_seconds": train_s, "device": str(run.device)}
    if cfg.final_eval_images_per_prompt:
        with torch.no_grad():
            report = evaluate_pipeline(run.pipe, images_per_prompt=cfg.final_eval_images_per_prompt, seed=0)
        result.update(report.to_dict())
    run.log(result)
    return result


def pretrain_main(argv: list[str], doc: str, config_class: type, run) -> int:
    """The pretraining scripts' command line: ``key=value`` overrides of ``config_class``, a JSONL log beside
    ``out_dir``; a bad setting or an unresumable state is one line on stderr and exit status 2."""
    import sys

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if {"-h", "--help"} & set(argv):
        print(doc)
        return 0
    try:
        merged = OmegaConf.merge(OmegaConf.structured(config_class), OmegaConf.from_dotlist(argv))
        cfg = config_class(**OmegaConf.to_container(merged))
    except (OmegaConfBaseException, PretrainError, ValueError) as err:
        known = ", ".join(f.name for f in fields(config_class))
        print(f"error: {str(err).splitlines()[0]} (settings: {known})", file=sys.stderr)
        return 2
    out = Path(cfg.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        run(cfg, log_path=out.with_name(out.name + "-pretrain.jsonl"))
    except PretrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
