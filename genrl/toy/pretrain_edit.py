"""Pretraining of the toy edit pipeline (FLUX.1 Kontext architecture) on the toy edit world
(used by ``scripts/pretrain_toy_edit.py``).

One stage: the transformer and both text towers learn the rectified-flow loss of the *target* scene's
latents, ``|| v_theta([x_t, z_source], t, instruction) - (eps - x0) ||^2`` with ``x_t = (1 - t) x0 + t eps``,
uniform ``t``, the source's latent tokens appended after the noisy ones exactly as ``FluxKontextPipeline``
appends them (same RoPE grid, first id 1), and a random guidance value in the guidance embedding. The VAE is
the toy SD3 pipeline's, frozen. Edits are drawn fresh from every family (:func:`rewards.toyedit.sample_edits`);
the RL splits are held out from RL, not from pretraining. A share ``instruction_noise`` of the move and
recolour instructions (``instruction_noise_families``) names another direction or colour than the one the
target shows, as paired edit data scraped at scale is sometimes wrong, and a share ``failed_edits`` of the
pairs of ``failed_edit_families`` shows the unedited source as the target of the instruction (an edit that
did not happen, kept as if it had). An EMA of the weights is saved.

A run is resumable as the image pipeline's is (``<out_dir>.resume/``, every ``checkpoint_every`` steps).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from rewards.toyedit.splits import sample_edits
from rewards.toyedit.world import DIRECTIONS, EDIT_FAMILIES, EditSpec, render_pair
from rewards.toyworld.world import COLORS

from .edit_pipeline import (
    TOY_EDIT_MAX_SEQUENCE_LENGTH,
    TOY_EDIT_PIPELINE_DIR,
    build_toy_edit_pipeline,
    load_toy_edit_pipeline,
)
from .evaluate_edit import evaluate_edit_pipeline
from .pipeline import TOY_PIPELINE_DIR
from .pretrain import (
    PretrainError,
    RunBase,
    _resolve_device,
    resume_dir,
    scenes_to_tensor,
    start_run,
)

#: Settings that only say how a run executes: they may change between a run and its resumption.
#: The families whose instructions have a wrong variant (another direction, another colour).
NOISY_INSTRUCTION_FAMILIES = ("move", "recolor")
EXECUTION_FIELDS = frozenset({"threads", "device", "checkpoint_every", "eval_every", "eval_images_per_edit",
                              "final_eval_images_per_edit", "fresh"})


@dataclass
class EditPretrainConfig:
    """Settings of a toy edit pretraining run (defaults are the ones that produced the shipped weights)."""

    seed: int = 0
    threads: int = 2
    device: str = "auto"
    out_dir: str = str(TOY_EDIT_PIPELINE_DIR)
    init_from: str | None = None  # continue from a saved toy edit pipeline instead of a random init
    vae_from: str = str(TOY_PIPELINE_DIR)  # the toy SD3 pipeline whose VAE the edit pipeline uses
    instruction_noise: float = 0.0  # share of move / recolour instructions that name a wrong direction / colour
    instruction_noise_families: list[str] = field(default_factory=lambda: list(NOISY_INSTRUCTION_FAMILIES))
    failed_edits: float = 0.0  # share of the pairs of failed_edit_families whose target is the unedited source
    failed_edit_families: list[str] = field(default_factory=lambda: ["swap", "resize"])
    family_weights: dict[str, float] = field(default_factory=dict)  # relative family weights (left out: 1)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 8e-4  # AdamW peak, cosine-decayed to 10 %
    warmup_steps: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    guidance_range: tuple[float, float] = (1.0, 5.0)  # guidance embedding inputs drawn uniformly (a no-op to learn)
    checkpoint_every: int = 250
    fresh: bool = False
    eval_every: int = 500
    eval_images_per_edit: int = 1
    final_eval_images_per_edit: int = 4

    def __post_init__(self) -> None:
        unknown = sorted(set(self.family_weights) - set(EDIT_FAMILIES))
        if unknown:
            raise PretrainError(f"family_weights names unknown edit family {unknown[0]!r}; families: {', '.join(EDIT_FAMILIES)}")
        if any(w < 0 for w in self.family_weights.values()):
            raise PretrainError("family_weights must be >= 0")
        if not set(self.instruction_noise_families) <= set(NOISY_INSTRUCTION_FAMILIES):
            raise PretrainError(f"instruction_noise_families={list(self.instruction_noise_families)}: only "
                                f"{', '.join(NOISY_INSTRUCTION_FAMILIES)} instructions have a wrong variant")
        unknown = sorted(set(self.failed_edit_families) - set(EDIT_FAMILIES))
        if unknown:
            raise PretrainError(f"failed_edit_families names unknown edit family {unknown[0]!r}; families: {', '.join(EDIT_FAMILIES)}")
        for key in ("instruction_noise", "failed_edits"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise PretrainError(f"{key}={getattr(self, key)} must be in [0, 1]")
        self.guidance_range = tuple(float(g) for g in self.guidance_range)
        for key in ("steps", "checkpoint_every", "eval_every"):
            if getattr(self, key) < 0:
                raise PretrainError(f"{key}={getattr(self, key)} must be >= 0")


def noisy_instruction(spec: EditSpec, rng: random.Random, rate: float,
                      families: Sequence[str] = NOISY_INSTRUCTION_FAMILIES) -> str:
    """The instruction of ``spec``, or with probability ``rate`` (moves and recolours only) one naming another
    direction or colour than the target shows."""
    if spec.family not in families or rng.random() >= rate:
        return spec.instruction
    if spec.family == "move":
        return replace(spec, direction=rng.choice([d for d in DIRECTIONS if d != spec.direction]), instruction="").instruction
    taken = {spec.subject_object.color, spec.new_color}
    return replace(spec, new_color=rng.choice([c for c in COLORS if c not in taken]), instruction="").instruction


def failed_edit(pair: tuple[np.ndarray, np.ndarray], spec: EditSpec, rng: random.Random, rate: float,
                families: Sequence[str] = ("swap", "resize")) -> tuple[np.ndarray, np.ndarray]:
    """The (source, target) ``pair`` of ``spec``, or with probability ``rate`` (edits of ``families`` only) the
    source as its own target: the edit did not happen. ``rng`` is not drawn from when ``rate`` is 0, so runs without
    failed edits keep their random stream."""
    if rate == 0.0 or spec.family not in families or rng.random() >= rate:
        return pair
    return pair[0], pair[0]


class _EditRun(RunBase):
    """One edit pretraining run: the pipeline, its random streams, the log and the resumable state."""

    def __init__(self, cfg: EditPretrainConfig, log_path: str | Path | None) -> None:
        self.cfg = cfg
        self.device = _resolve_device(cfg.device)
        self.rng = random.Random(cfg.seed)
        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.log_path = Path(log_path) if log_path else None
        self.state_dir = resume_dir(cfg.out_dir)
        self.pipe = (load_toy_edit_pipeline(cfg.init_from) if cfg.init_from
                     else build_toy_edit_pipeline(cfg.seed, vae_from=cfg.vae_from))
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(self.device)
        self.pipe.vae.eval().requires_grad_(False)
        self.modules = {"transformer": self.pipe.transformer, "text_encoder": self.pipe.text_encoder,
                        "text_encoder_2": self.pipe.text_encoder_2}
        self.start, self.elapsed_before = time.time(), 0.0

    def save_state(self, step: int, opt: torch.optim.Optimizer, ema: EMAModel) -> None:
        self.write_run_state(self.modules, _recipe(self.cfg), step, opt, ema)

    def load_state(self) -> dict | None:
        return self.read_run_state(self.modules, lambda state: (state["recipe"], _recipe(self.cfg)))

    def batch(self) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Instructions, packed source latents and packed target latents of a batch of fresh edits."""
        cfg, pipe = self.cfg, self.pipe
        specs = sample_edits(cfg.batch_size, self.rng, cfg.family_weights or None)
        prompts = [noisy_instruction(s, self.rng, cfg.instruction_noise, cfg.instruction_noise_families) for s in specs]
        pairs = [failed_edit(render_pair(s), s, self.rng, cfg.failed_edits, cfg.failed_edit_families) for s in specs]
        with torch.no_grad():
            packed = []
            for images in ([p[0] for p in pairs], [p[1] for p in pairs]):
                x = scenes_to_tensor(np.stack(images)).to(self.device)
                latents = pipe.vae.encode(x).latent_dist.mode()
                latents = (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
                b, c, h, w = latents.shape
                packed.append(pipe._pack_latents(latents, b, c, h, w))
        return prompts, packed[0], packed[1]

    def loss(self, prompts: list[str], source: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        cfg, pipe = self.cfg, self.pipe
        n = x0.shape[0]
        t = torch.rand(n, generator=self.noise_gen).to(self.device)
        eps = torch.randn(x0.shape, generator=self.noise_gen).to(self.device)
        lo, hi = cfg.guidance_range
        guidance = (lo + (hi - lo) * torch.rand(n, generator=self.noise_gen)).to(self.device)
        xt = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * eps
        embeds, pooled, text_ids = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device,
                                                      max_sequence_length=TOY_EDIT_MAX_SEQUENCE_LENGTH)
        side = round(x0.shape[1] ** 0.5)
        ids = pipe._prepare_latent_image_ids(n, side, side, self.device, x0.dtype)
        source_ids = ids.clone()
        source_ids[..., 0] = 1  # the condition's tokens on the grid's second plane, as the pipeline places them
        pred = pipe.transformer(hidden_states=torch.cat([xt, source], dim=1), timestep=t, guidance=guidance,
                                pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                                img_ids=torch.cat([ids, source_ids], dim=0), return_dict=False)[0]
        return F.mse_loss(pred[:, : x0.shape[1]], eps - x0)

    def train(self, saved: dict | None) -> None:
        self.fit_with_ema(list(self.modules.values()), lambda: self.loss(*self.batch()), saved, stage="edit",
                          evaluate=lambda step: self.evaluate(step, self.cfg.eval_images_per_edit),
                          checkpoint=self.save_state)

    def evaluate(self, step: int | str, images_per_edit: int) -> dict:
        for m in self.modules.values():
            m.eval()
        with torch.no_grad():
            report = evaluate_edit_pipeline(self.pipe, images_per_edit=images_per_edit, seed=10_000)
        for m in self.modules.values():
            m.train(self.pipe.transformer.training)
        record = {"stage": "eval", "step": step, **report.to_dict()}
        self.log(record)
        return record


def _recipe(cfg: EditPretrainConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k not in EXECUTION_FIELDS}


def pretrain_edit(cfg: EditPretrainConfig, log_path: str | Path | None = None) -> dict:
    """Train the toy edit pipeline, save it to ``cfg.out_dir`` and return the final held-out evaluation.

    A run interrupted after a checkpoint continues from it when called again with the same settings.
    """
    run, saved = start_run(_EditRun, cfg, log_path, _recipe(cfg))
    run.train(saved)
    return run.finish(cfg.final_eval_images_per_edit)
