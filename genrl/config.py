"""Typed experiment configuration: YAML files in ``configs/`` plus dotted ``key=value`` overrides.

The schema is a tree of dataclasses loaded through OmegaConf structured configs, so unknown keys
and wrong types are rejected with the offending key in the message. Defaults are the toy world's;
the SD3.5-M and FLUX configs in ``configs/`` override them with the reference values.

This module imports neither torch nor a model library (reward names are read from the ``rewards``
package's sources), so a script checks its command line and config in a fraction of a second and
imports the trainer only for a valid one (:func:`load_config_or_exit`).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass
class ModelConfig:
    # adapter: "auto" (from the pipeline's class) or a registered family: sd3 (SD3/SD3.5/toy), flux, flux_kontext,
    # qwen_image_edit, qwen_image_edit_plus (Qwen-Image-Edit-2509), wan, stable_audio
    family: str = "auto"
    pretrained: str = "toy"  # hub id, local pipeline directory, or "toy"
    revision: str | None = None
    trust_remote_code: bool = False
    max_sequence_length: int = 0  # T5 tokens (SD3.5: 256, FLUX.1-dev: 512, toy: 0 = no T5)
    height: int | None = None  # None: the transformer's native size
    width: int | None = None
    gradient_checkpointing: bool = False
    # "sdpa" (torch scaled_dot_product_attention), "xformers" (extra, GPU) or a backend of diffusers' attention
    # dispatcher for the families whose attention goes through it (FLUX, Wan, Qwen-Image): flash, _native_cudnn, ...
    attention: str = "sdpa"
    # "auto" (FSDP2 when the accelerate launch config asks for FSDP, else none), "none" (the denoiser replicated on
    # every process, DDP) or "fsdp" (FSDP2: the denoiser sharded per transformer block across processes)
    sharding: str = "auto"
    # decode one sample at a time (vae_slicing) or in overlapping tiles (vae_tiling): the VAE's peak memory for
    # video batches and large images, at the same result up to the tiles' blending
    vae_slicing: bool = False
    vae_tiling: bool = False
    # frozen components kept in host memory, each moved to the device only while it runs (e.g. [text_encoder_3]:
    # SD3's T5-XXL; [text_encoder, vae]); see genrl.models.offload
    cpu_offload: list[str] = field(default_factory=list)
    # options of the model family's adapter beyond the ones above (Wan: num_frames, negative_prompt),
    # checked by the adapter by name
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoRAConfig:
    enabled: bool = True  # False: full fine-tuning of the transformer
    rank: int = 32
    alpha: int = 64
    init: str = "gaussian"  # peft init_lora_weights: "gaussian" or "true" (Kaiming A); B starts at zero either way
    target_modules: list[str] | None = None  # peft target modules; None: the model family's default


@dataclass
class SampleConfig:
    num_steps: int = 10  # denoising steps of training rollouts
    eval_num_steps: int = 40  # steps of the deterministic evaluation sampler
    guidance_scale: float = 4.5  # CFG scale (SD3) or distilled guidance (FLUX)
    eval_guidance_scale: float | None = None  # None: same as guidance_scale
    # "sde" (Flow-GRPO), "wan_sde" (Flow-GRPO's Wan2.1 step), "cps" (coefficients-preserving) or "ddim" (DDIM-eta,
    # Stable Audio's first-order step)
    step_type: str = "sde"
    noise_level: float = 0.7
    solver: str = "euler"  # deterministic steps of training rollouts: "euler" or "dpm2" (DPM-Solver++(2M))
    eval_solver: str | None = None  # solver of the deterministic evaluation sampler (None: same as solver)
    window_size: int = 0  # Flow-GRPO-Fast: stochastic steps per rollout (0: all steps)
    window_range: list[int] | None = None  # [r0, r1): where the window may start and end (None: all steps)
    batch_size: int = 8  # images per process per sampling iteration
    group_size: int = 8  # images per prompt (k); a group may span processes
    num_batches_per_epoch: int = 2  # sampling iterations per epoch
    same_latent: bool = False  # one initial noise per prompt within a group
    # encode each prompt once per run and keep its embeddings on the CPU (text-only families; see
    # genrl.models.embedding_cache): saves the text encoders' time when prompts repeat across epochs
    cache_prompt_embeddings: bool = False
    # score each sampling batch on a worker thread while the next one samples (the same scores; a gain when the
    # reward runs elsewhere, e.g. the reward server, or leaves cores idle): see docs/performance.md
    overlap_scoring: bool = False
    global_std: bool = True  # advantages use the std over all rewards (False: the group's std)
    eval_batch_size: int = 16
    eval_images_per_prompt: int = 1


@dataclass
class TrainConfig:
    algorithm: str = "flow_grpo"
    learning_rate: float = 3e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-4
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    clip_range: float = 1e-4
    adv_clip_max: float = 5.0
    #: flow_grpo / adv_grpo: each reward's own group advantage (clipped), summed with its weight, instead of the
    #: advantage of the weighted sum (PISCES's GRPO with R_Q and R_S)
    per_reward_advantages: bool = False
    #: flow_grpo / adv_grpo: train only each group's best_and_worst // 2 highest and lowest rewards, the advantages
    #: taken within that subset (DanceGRPO's and PISCES's bestofn; 0: every sample)
    best_and_worst: int = 0
    beta: float = 0.0  # KL weight against the reference policy (adapter disabled)
    kl_convention: str = "code"  # "code" (the released code: no dt factor) or "paper"
    timestep_fraction: float = 0.99  # share of each rollout's steps that is trained (first ones); a window trains all its steps
    gradient_accumulation_steps: int = 1  # sampling batches per optimizer step
    num_inner_epochs: int = 1
    ema: bool = True
    ema_decay: float = 0.9
    ema_update_every: int = 8  # optimizer steps between EMA updates
    ema_on_cpu: bool = False  # keep the EMA weights in host memory, on the device only for their update


@dataclass
class NFTConfig:
    """DiffusionNFT's own settings (``train.algorithm=diffusion_nft``); ``train.beta`` is its KL weight."""

    beta: float = 1.0  # NFT beta: v+ = beta v + (1 - beta) v_old (1.0 GenEval/PickScore, 0.1 OCR)
    old_decay_type: int = 1  # old-adapter EMA: 1: min(0.001 s, 0.5); 2: 0 until s = 75, then min(0.0075 (s - 75), 0.999)
    loss_scale: float = 5.0  # the reference's constant factor on the NFT loss
    weight_floor: float = 1e-5  # floor of the adaptive (stop-gradient) per-sample weights
    ban_std: float = 0.0  # ban a prompt when its group reward std < ban_std and mean > ban_mean (0: off)
    ban_mean: float = 0.9


@dataclass
class DragonConfig:
    """DRAGON's settings (``train.algorithm=dragon``): how demonstrations are chosen and the preference loss."""

    # "paired": per prompt, best vs worst sample with the Diffusion-DPO loss; "unpaired": above vs below the
    # epoch's median reward with the Diffusion-KTO loss
    demonstrations: str = "paired"
    beta: float = 100.0  # the preference loss's inverse temperature (flow_grpo's online DPO script: 100)
    kto_z0: float = 0.0  # KTO's reference point
    # a set reward (dataset_fd, vendi) as the training reward: "leave_one_out" (each sample's contribution to the
    # epoch's set is its reward) or "greedy" (D+ grown greedily to greedy_fraction of the set; unpaired only)
    set_selection: str = "leave_one_out"
    greedy_fraction: float = 0.5


@dataclass
class BackpropConfig:
    """Reward backpropagation's settings (``train.algorithm=reward_backprop``: DRaFT-K, AlignProp); ``train.beta``
    weighs its regulariser to the reference."""

    grad_steps: int = 1  # K: the last K sampling steps (and the decoder) keep gradients (DRaFT-1 by default)
    truncation: str = "fixed"  # "fixed": K = grad_steps; "random": K uniform in [1, grad_steps] per batch (AlignProp);
    # "one_step": the reward of a one-step prediction from a random step's state (ReFL; PISCES's direct backprop)
    one_step_range: list[int] | None = None  # truncation=one_step: [start, end) of the step drawn (None: every step)
    checkpoint: bool = True  # recompute each kept step's (and the decoder's) activations in the backward pass
    loss_scale: float = 1.0  # the loss is -loss_scale * mean reward (AlignProp's loss_coeff)


@dataclass
class CtrlUConfig:
    """Ctrl-U's settings (``train.algorithm=ctrl_u``): the uncertainty-weighted reward loss on one-step predictions,
    with the released depth setting's values (t in units of the flow level, 400 / 1,000 timesteps -> 0.4)."""

    step: float = 0.001  # the second copy's level s + step (Ctrl-U's t + 1 of 1,000 timesteps)
    t_max: float = 0.4  # the reward loss counts samples at s <= t_max
    reg: float = 0.1  # weight of the uncertainty regulariser (depth's u_scale)
    grad_scale: float = 1.0  # the reward loss's weight after the ramp
    ramp_epochs: int = 0  # the weight rises linearly over this many epochs (0: full weight from the start)
    reward_offset: float = 1.0  # the reward loss is reward_offset - r: an upper bound of the reward keeps it >= 0
    references: str = "toy"  # the training images: "toy" (renders of each prompt) or a folder with metadata.jsonl
    per_prompt: int = 8  # toy references rendered per prompt


@dataclass
class TPConfig:
    """TP-GRPO's switches (``train.algorithm=tp_grpo``), with the released launch scripts' defaults."""

    balance: bool = True  # use_balanced_bonus: equal counts of positive/negative-trend turning points per batch
    bonus: float = 1.0  # eta_b: the aggregated reward's factor at kept turning points (replacing the local one)


@dataclass
class AdvConfig:
    """Adv-GRPO's discriminator schedule and references (``train.algorithm=adv_grpo``)."""

    #: "d_times": a discriminator step every epoch except each d_times-th, which is a generator epoch
    #: (the DINO code); "gate": a discriminator step (and no generator update) when mean r(gen) > mean r(ref)
    schedule: str = "d_times"
    d_times: int = 10
    references: str = "toy"  # "toy" (renderer scenes of each prompt) or a folder (see rewards.references)
    references_per_prompt: int = 8  # toy references rendered per prompt
    heldout_references: int = 1  # references per prompt kept for the discriminator's accuracy
    reference_image_size: int | None = None  # resize folder references to this square size (None: as stored)


@dataclass
class RewardConfig:
    #: the training reward as a list of terms ``{name, weight (1.0), options ({}), label (the name)}``, summed with
    #: their weights: one reward may appear twice under two labels. When set, weights/options are not used.
    train: list[dict[str, Any]] = field(default_factory=list)
    #: reward name -> weight of the training reward (a weighted sum, no per-reward normalisation)
    weights: dict[str, float] = field(default_factory=lambda: {"toy_verifier": 1.0})
    #: reward name -> constructor options
    options: dict[str, Any] = field(default_factory=lambda: {"toy_verifier": {"mode": "partial"}})
    #: metric name -> {"name": reward, **options}: rewards reported at evaluation
    eval: dict[str, Any] = field(default_factory=lambda: {
        "strict": {"name": "toy_verifier", "mode": "strict"},
        "partial": {"name": "toy_verifier", "mode": "partial"}})


@dataclass
class DataConfig:
    train_prompts: str = "toy:train"  # "toy:train", or a .txt / .jsonl prompt file
    test_prompts: str = "toy:test"
    # how training prompts are drawn: "uniform" over prompts, or "family" (each family, e.g. a toy
    # GenEval family, the same share; prompts without a family count as one family)
    balance: str = "uniform"


@dataclass
class LogConfig:
    output_dir: str = "outputs/toy-flow-grpo"
    overwrite: bool = False  # start over in an output_dir that holds a run, deleting its records first
    log_with: list[str] = field(default_factory=lambda: ["tensorboard"])  # add "wandb" (extra) if wanted
    eval_every: int = 10  # epochs between evaluations (0: only at the start and the end)
    save_every: int = 10  # epochs between checkpoints (0: only at the end)
    grid_every: int = 10  # epochs between sample grids of the evaluation images
    keep_checkpoints: int = 2  # newest checkpoints kept
    export_merged: bool = True  # also save the base pipeline with the LoRA fused in (a full copy)
    ratio_tolerance: float = 1e-3  # warn when the first on-policy importance ratio strays further from 1


@dataclass
class ExperimentConfig:
    seed: int = 42
    epochs: int = 40
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (accelerate)
    resume: str | None = None  # "latest" or a checkpoint directory
    time_budget_minutes: float = 0.0  # stop (evaluate, save, export) once training time exceeds this (0: no limit)
    cpu_threads: int = 0  # torch threads when running on a CPU (0: this process's share of the cores; accelerate launch would use 1)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    nft: NFTConfig = field(default_factory=NFTConfig)
    tp: TPConfig = field(default_factory=TPConfig)
    adv: AdvConfig = field(default_factory=AdvConfig)
    dragon: DragonConfig = field(default_factory=DragonConfig)
    backprop: BackpropConfig = field(default_factory=BackpropConfig)
    ctrl_u: CtrlUConfig = field(default_factory=CtrlUConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    log: LogConfig = field(default_factory=LogConfig)


#: Mappings that a config file or override replaces instead of merging into the defaults, so that
#: ``reward.weights={pickscore: 1.0}`` means "only PickScore", not "PickScore and the toy verifier".
REPLACED_MAPPINGS = ("reward.weights", "reward.options", "reward.eval")

#: Keys a resumed run may change (:func:`resume_changes`): they say how long, where or how fast it
#: runs, or what it logs, not what it trains. A key ending in ``.`` frees everything under it.
#: ``model.attention`` is a kernel choice (results equal up to rounding); ``model.gradient_checkpointing``
#: trades memory for time; ``sample.eval_batch_size`` only batches the evaluation, whose noise is
#: seeded per prompt and image; ``model.vae_slicing`` and ``sample.cache_prompt_embeddings`` change how the
#: same decode and embeddings are computed; ``sample.overlap_scoring`` only when the same scores are computed;
#: ``model.cpu_offload`` and ``train.ema_on_cpu`` only where weights wait between uses.
#: Everything else (learning rate, batch and group sizes, seed, rewards
#: and their options, evaluation settings, mixed precision) must match the run being continued.
RESUME_FREE_KEYS = ("resume", "epochs", "time_budget_minutes", "cpu_threads", "log.", "model.attention",
                    "model.gradient_checkpointing", "model.trust_remote_code", "sample.eval_batch_size",
                    "model.vae_slicing", "sample.cache_prompt_embeddings", "sample.overlap_scoring",
                    "model.cpu_offload", "train.ema_on_cpu")

#: Keys earlier versions had, which this one no longer reads: key -> (the value that matches what the
#: trainer does, why it went). A config that sets one to that value (a run's saved ``config.yaml``) still
#: loads, with a warning; any other value is a :class:`ConfigError`, since the run would not do what it says.
REMOVED_KEYS: dict[str, tuple[Any, str]] = {
    "train.cfg": (True, ("the training forward always uses the rollouts' guidance, as the on-policy ratio needs "
                         "(sample.guidance_scale; on SD3, classifier-free guidance when > 1); to train without "
                         "CFG set sample.guidance_scale=1")),
}

#: ``model.pretrained`` values that name the toy pipeline shipped in the package (the loader,
#: ``genrl.models.loading``, resolves them; kept here so checking a config needs no diffusers).
TOY_MODEL_ALIASES = frozenset({"toy", "genrl/sd3-toy"})
#: ``model.pretrained`` values that name the shipped toy edit pipeline (FLUX.1 Kontext architecture)
TOY_EDIT_MODEL_ALIASES = frozenset({"toy_edit", "genrl/kontext-toy"})
#: ``model.pretrained`` values that name the shipped toy audio pipeline (Stable Audio Open architecture)
TOY_AUDIO_MODEL_ALIASES = frozenset({"toy_audio", "genrl/stable-audio-toy"})
#: ``model.pretrained`` values that name the shipped toy video pipeline (Wan2.1 architecture)
TOY_VIDEO_MODEL_ALIASES = frozenset({"toy_video", "genrl/wan-toy"})


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                num_processes: int | None = None) -> ExperimentConfig:
    """Merge the schema defaults, a YAML file and ``key=value`` overrides into an :class:`ExperimentConfig`.

    Every error is a one-line :class:`ConfigError` naming its source: the file (with the line of a
    YAML syntax error) or the override. Nothing here imports torch or a model, so a command line is
    checked in well under a second. ``num_processes`` is passed on to :func:`validate`.
    """
    parts: list[tuple[str, DictConfig]] = [(f"in {path}", _read_yaml(Path(path)))] if path is not None else []
    for override in overrides or []:
        source = f"in the command-line override {override!r}"
        if "=" not in override:
            raise ConfigError(f"invalid configuration {source}: expected key=value")
        parts.append((source, _guarded(source, OmegaConf.from_dotlist, [override])))
    for source, part in parts:
        _drop_removed_keys(source, part)
    merged = OmegaConf.structured(ExperimentConfig)
    for source, part in parts:  # one at a time, so that an error names the file or override that caused it
        merged = _guarded(source, OmegaConf.merge, merged, part)
    for key in REPLACED_MAPPINGS:  # the last file or override that sets one of these replaces it whole
        for source, part in reversed(parts):
            value = OmegaConf.select(part, key)
            if value is not None:
                _guarded(source, OmegaConf.update, merged, key, value, merge=False)
                break
    cfg: ExperimentConfig = _guarded("", OmegaConf.to_object, merged)
    if cfg.mixed_precision == "False":  # YAML 1.1 reads a bare `no` (accelerate's spelling) as false
        cfg.mixed_precision = "no"
    validate(cfg, num_processes=num_processes)
    return cfg


def _read_yaml(path: Path) -> DictConfig:
    """A config file's mapping; a missing file, a YAML syntax error or a non-mapping is a :class:`ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = OmegaConf.load(path)
    except yaml.MarkedYAMLError as err:  # PyYAML's own message is several lines; keep the problem and where
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"invalid YAML in {path}{where}: {err.problem or err.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"invalid YAML in {path}: {str(err).splitlines()[0]}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid configuration in {path}: {_describe(err)}") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path} must hold a mapping of config keys, not a {type(data).__name__}")
    return data


def _drop_removed_keys(source: str, part: DictConfig) -> None:
    """Take the :data:`REMOVED_KEYS` out of one file's or override's mapping: with a warning when a key holds
    the value that matches what the trainer does, else a :class:`ConfigError` saying why the key went."""
    for key, (matching, why) in REMOVED_KEYS.items():
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(part, parent_key) if parent_key else part
        if not isinstance(parent, DictConfig) or name not in parent:
            continue
        value = parent[name]
        if value != matching:
            shown = str(value).lower() if isinstance(value, bool) else value  # as YAML spells it
            raise ConfigError(f"{key}={shown} {source}: {key} was removed, {why}")
        warnings.warn(f"{key} {source} is ignored: it was removed, {why}", FutureWarning, stacklevel=3)
        del parent[name]


def _guarded(source: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with OmegaConf's errors turned into a one-line :class:`ConfigError` naming ``source``."""
    try:
        return fn(*args, **kwargs)
    except OmegaConfBaseException as err:
        where = f" {source}" if source else ""
        raise ConfigError(f"invalid configuration{where}: {_describe(err)}") from None


def _describe(err: OmegaConfBaseException) -> str:
    """OmegaConf's message on one line, led by the full key (its further lines repeat the key and types)."""
    message = str(getattr(err, "msg", None) or err).splitlines()[0]
    key = getattr(err, "full_key", None)
    return f"{key}: {message}" if key else message


def validate(cfg: ExperimentConfig, num_processes: int | None = None) -> None:
    """Check relations between values that types alone cannot express; raise :class:`ConfigError`.

    ``num_processes`` (when given) also checks that the prompt sampler can lay out whole groups of
    distinct training prompts (:func:`check_group_layout`, which reads ``data.train_prompts`` for their
    number); a config written for 8 GPUs cannot know it by itself.
    """
    s, t = cfg.sample, cfg.train
    checks = [
        (bool(cfg.model.family), "model.family must be 'auto' or a model family name"),
        (s.step_type in ("sde", "wan_sde", "cps", "ddim"), "sample.step_type must be 'sde', 'wan_sde', 'cps' or 'ddim'"),
        (s.solver in ("euler", "dpm2"), "sample.solver must be 'euler' or 'dpm2'"),
        (s.eval_solver in (None, "euler", "dpm2"), "sample.eval_solver must be 'euler', 'dpm2' or null (sample.solver)"),
        (bool(cfg.model.attention), "model.attention must name a kernel: sdpa, xformers or a diffusers backend"),
        (cfg.model.sharding in ("auto", "none", "fsdp"), "model.sharding must be 'auto', 'none' or 'fsdp'"),
        (s.num_steps >= 2, "sample.num_steps must be >= 2"),
        (0 <= s.noise_level, "sample.noise_level must be >= 0"),
        (s.batch_size >= 1 and s.group_size >= 1, "sample.batch_size and sample.group_size must be >= 1"),
        (s.num_batches_per_epoch >= 1, "sample.num_batches_per_epoch must be >= 1"),
        (0 <= s.window_size < s.num_steps, "sample.window_size must be in [0, sample.num_steps)"),
        (s.window_range is None or len(s.window_range) == 2, "sample.window_range must be [start, end]"),
        (0 < t.timestep_fraction <= 1, "train.timestep_fraction must be in (0, 1]"),
        (t.clip_range > 0, "train.clip_range must be > 0"),
        (t.best_and_worst == 0 or (t.best_and_worst >= 2 and t.best_and_worst % 2 == 0),
         "train.best_and_worst must be 0 (off) or an even number >= 2"),
        (not (t.per_reward_advantages or t.best_and_worst) or t.algorithm in ("flow_grpo", "adv_grpo"),
         f"train.per_reward_advantages and train.best_and_worst apply to flow_grpo and adv_grpo, not {t.algorithm!r}"),
        (cfg.nft.beta > 0, "nft.beta must be > 0"),
        (cfg.nft.old_decay_type in (1, 2), "nft.old_decay_type must be 1 or 2"),
        (cfg.dragon.demonstrations in ("paired", "unpaired"), "dragon.demonstrations must be 'paired' or 'unpaired'"),
        (cfg.dragon.beta > 0, "dragon.beta must be > 0"),
        (cfg.dragon.set_selection in ("leave_one_out", "greedy"),
         "dragon.set_selection must be 'leave_one_out' or 'greedy'"),
        (0 < cfg.dragon.greedy_fraction < 1, "dragon.greedy_fraction must be in (0, 1)"),
        (not (cfg.dragon.set_selection == "greedy" and cfg.dragon.demonstrations == "paired"),
         "dragon.set_selection=greedy chooses sets, not pairs: use dragon.demonstrations=unpaired"),
        (1 <= cfg.backprop.grad_steps <= s.num_steps, "backprop.grad_steps must be in [1, sample.num_steps]"),
        (cfg.backprop.truncation in ("fixed", "random", "one_step"),
         "backprop.truncation must be 'fixed', 'random' or 'one_step'"),
        (cfg.backprop.one_step_range is None or (len(cfg.backprop.one_step_range) == 2
                                                 and 0 <= cfg.backprop.one_step_range[0]
                                                 < cfg.backprop.one_step_range[1] <= s.num_steps),
         "backprop.one_step_range must be [start, end) with 0 <= start < end <= sample.num_steps"),
        (cfg.backprop.loss_scale > 0, "backprop.loss_scale must be > 0"),
        (0 < cfg.ctrl_u.step <= 1, "ctrl_u.step must be in (0, 1]"),
        (0 < cfg.ctrl_u.t_max <= 1, "ctrl_u.t_max must be in (0, 1]"),
        (cfg.ctrl_u.reg >= 0 and cfg.ctrl_u.grad_scale > 0 and cfg.ctrl_u.ramp_epochs >= 0,
         "ctrl_u.reg and ctrl_u.ramp_epochs must be >= 0 and ctrl_u.grad_scale > 0"),
        (cfg.ctrl_u.per_prompt >= 1, "ctrl_u.per_prompt must be >= 1"),
        (t.beta >= 0, "train.beta must be >= 0"),
        (cfg.adv.schedule in ("d_times", "gate"), "adv.schedule must be 'd_times' or 'gate'"),
        (cfg.adv.d_times >= 1, "adv.d_times must be >= 1"),
        (0 <= cfg.adv.heldout_references < cfg.adv.references_per_prompt,
         "adv.heldout_references must be in [0, adv.references_per_prompt)"),
        (t.kl_convention in ("code", "paper"), "train.kl_convention must be 'code' or 'paper'"),
        (t.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps must be >= 1"),
        (s.num_batches_per_epoch % t.gradient_accumulation_steps == 0,
         "sample.num_batches_per_epoch must be a multiple of train.gradient_accumulation_steps"),
        (cfg.mixed_precision in ("no", "fp16", "bf16"), "mixed_precision must be 'no', 'fp16' or 'bf16'"),
        (bool(cfg.reward.weights), "reward.weights must name at least one reward"),
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (cfg.cpu_threads >= 0, "cpu_threads must be >= 0"),
        (cfg.data.balance in ("uniform", "family"), "data.balance must be 'uniform' or 'family'"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if num_processes is not None:
        check_group_layout(s, num_processes, len(load_prompt_set("data.train_prompts", cfg.data.train_prompts)))
    if s.same_latent and t.algorithm in ("reward_backprop", "ctrl_u"):
        raise ConfigError(f"sample.same_latent=true: train.algorithm {t.algorithm!r} draws a fresh initial noise for "
                          "every sample (it uses no groups); set sample.same_latent=false")
    if s.same_latent and (t.algorithm in ("diffusion_nft", "dragon") or s.noise_level == 0):
        # one initial noise per group through a deterministic sampler gives identical images: no reward spread
        why = (f"train.algorithm {t.algorithm!r} samples" if t.algorithm in ("diffusion_nft", "dragon")
               else "sample.noise_level 0 samples")
        raise ConfigError(f"sample.same_latent=true makes every image of a group identical when {why} "
                          "deterministically, so no group has a reward spread to learn from; set sample.same_latent=false")
    if s.step_type == "cps" and t.beta > 0 and t.algorithm != "diffusion_nft" and _last_trained_step(cfg) >= s.num_steps:
        # the last CPS step lands on sigma = 0 with no noise, so its Gaussian has std 0 and the KL divides by 0
        raise ConfigError("train.beta > 0 with sample.step_type 'cps' needs every trained step to end above sigma = 0: "
                          f"end sample.window_range at most at sample.num_steps - 1 = {s.num_steps - 1} "
                          "(or lower train.timestep_fraction when sample.window_size is 0)")
    if s.step_type == "ddim" and t.algorithm != "diffusion_nft" and _last_trained_step(cfg) >= s.num_steps:
        # DDIM's last step lands on sigma = 0 without noise: it has no density, so no policy gradient
        raise ConfigError("sample.step_type 'ddim' cannot train the last step (it lands on sigma = 0 without noise): "
                          f"end sample.window_range at most at sample.num_steps - 1 = {s.num_steps - 1} "
                          "(or lower train.timestep_fraction when sample.window_size is 0)")
    problem = local_pipeline_problem(cfg.model.pretrained)
    if problem:
        raise ConfigError(f"model.pretrained={cfg.model.pretrained!r}: {problem}")
    _check_rewards(cfg.reward)


def check_group_layout(sample: SampleConfig, num_processes: int, num_prompts: int | None = None) -> None:
    """:func:`group_layout_problem` for a config's sample settings, as a :class:`ConfigError`."""
    problem = group_layout_problem(sample.batch_size, sample.group_size, num_processes, num_prompts)
    if problem:
        raise ConfigError(problem)


def group_layout_problem(batch_size: int, group_size: int, num_processes: int,
                         num_prompts: int | None = None) -> str | None:
    """Why the prompt sampler cannot lay out whole groups, or None: the images of one sampling
    iteration, ``num_processes * batch_size``, form whole groups of ``group_size`` images of one
    prompt (a group may span processes), each group of another of the ``num_prompts`` training
    prompts (when given).

    The one statement of the rule: ``genrl.algorithms.sampler.KRepeatSampler`` raises it as a
    ``ValueError``. The message names the config keys the trainer builds the sampler from.
    """
    if group_size < 1:
        return f"sample.group_size={group_size} must be >= 1"
    total = num_processes * batch_size
    if total % group_size:
        return (f"sample.group_size={group_size} must divide num_processes x sample.batch_size = "
                f"{num_processes} x {batch_size} = {total}, the images of one sampling iteration, "
                "which form whole groups of one prompt")
    if num_prompts is not None and total // group_size > num_prompts:
        return (f"num_processes x sample.batch_size / sample.group_size = {num_processes} x {batch_size} / "
                f"{group_size} = {total // group_size} distinct prompts per sampling iteration, but "
                f"data.train_prompts has {num_prompts}; raise sample.group_size or lower sample.batch_size")
    return None


def load_prompt_set(key: str, source: str):
    """The ``genrl.data.PromptDataset`` of config key ``key`` (``data.train_prompts`` or
    ``data.test_prompts``); a missing, empty or malformed source is a :class:`ConfigError` naming it.

    Imports no torch (the toy splits are built from the world's tables), so validation may call it.
    """
    from genrl.data import load_prompts

    try:
        return load_prompts(source)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{key}={source!r}: {err}") from err


def is_local_model_path(model: str) -> bool:
    """Whether a model value names a local directory rather than the toy pipeline or a hub id: it
    exists, starts with ``.``, ``/`` or ``~``, or has more than one ``/`` (``org/name`` is a hub id)."""
    if model in TOY_MODEL_ALIASES | TOY_EDIT_MODEL_ALIASES | TOY_AUDIO_MODEL_ALIASES | TOY_VIDEO_MODEL_ALIASES:
        return False
    return Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or model.count("/") > 1


def local_pipeline_problem(model: str) -> str | None:
    """What is wrong with a model value (``model.pretrained``, a script's ``--model``) that names a
    local pipeline directory (:func:`is_local_model_path`), or None when it is fine, the toy pipeline
    or a hub id, which only loading can check.

    The loader (``genrl.models.loading.resolve_model_path``, which imports diffusers) raises the
    same problem as a ``FileNotFoundError``.
    """
    if not is_local_model_path(model):
        return None
    path = Path(model).expanduser()
    if not path.is_dir():
        return f"model directory not found: {path.absolute()}"
    if not (path / "model_index.json").is_file():
        return f"{path} is not a diffusers pipeline directory (no model_index.json)"
    return None


REWARD_TERM_KEYS = ("name", "weight", "options", "label")


def reward_terms(reward: RewardConfig) -> list[tuple[str, str, float, dict[str, Any], str]]:
    """The training reward's terms as ``(label, reward name, weight, options, config key)``: ``reward.train``'s
    items, or one per ``reward.weights`` entry with its ``reward.options``."""
    if reward.train:
        return [(str(t.get("label", t["name"])), t["name"], float(t.get("weight", 1.0)), dict(t.get("options") or {}),
                 f"reward.train[{i}]") for i, t in enumerate(reward.train)]
    return [(name, name, float(weight), dict(reward.options.get(name) or {}), f"reward.weights.{name}")
            for name, weight in reward.weights.items()]


def _check_reward_terms(reward: RewardConfig, known: set[str]) -> None:
    """``reward.train``: mappings with a known name, a finite weight >= 0, mapping options and unique labels."""
    defaults = RewardConfig()
    if reward.weights != defaults.weights or reward.options != defaults.options:
        warnings.warn("reward.train is set, so reward.weights and reward.options are not used "
                      f"(they hold {dict(reward.weights)})", UserWarning, stacklevel=3)
    labels: set[str] = set()
    for i, term in enumerate(reward.train):
        key = f"reward.train[{i}]"
        if not isinstance(term, dict) or "name" not in term:
            raise ConfigError(f"{key} must be a mapping with a 'name' (and optionally weight, options, label)")
        extra = sorted(set(term) - set(REWARD_TERM_KEYS))
        if extra:
            raise ConfigError(f"{key} has unknown keys {extra}; a term has {', '.join(REWARD_TERM_KEYS)}")
        if term["name"] not in known:
            raise ConfigError(f"{key}.name: unknown reward {term['name']!r}; available: {sorted(known)}")
        weight = term.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"{key}.weight={weight!r} must be a finite number >= 0")
        if not isinstance(term.get("options") or {}, dict):
            raise ConfigError(f"{key}.options must be a mapping of the reward's options")
        label = str(term.get("label", term["name"]))
        if label in labels:
            raise ConfigError(f"{key}: label {label!r} is used twice; give each use of a reward its own label")
        labels.add(label)
    if not any(float(t.get("weight", 1.0)) > 0 for t in reward.train):
        raise ConfigError("reward.train weights are all 0: at least one term needs a positive weight")


def _check_rewards(reward: RewardConfig) -> None:
    """Weights finite, >= 0 and not all 0; every reward name known (see :func:`known_rewards`)."""
    known = set(known_rewards())
    if reward.train:
        _check_reward_terms(reward, known)
    for name, weight in reward.weights.items():
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"reward.weights.{name}={weight} must be a finite number >= 0")
    if reward.weights and not any(weight > 0 for weight in reward.weights.values()):
        raise ConfigError("reward.weights are all 0: at least one reward needs a positive weight")
    for key, names in (("reward.weights", list(reward.weights)), ("reward.options", list(reward.options))):
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(f"{key} names unknown rewards {unknown}; available: {sorted(known)}")
    for metric, spec in reward.eval.items():
        if not isinstance(spec, dict) or spec.get("name") not in known:
            raise ConfigError(f"reward.eval.{metric} must be a mapping whose 'name' is one of {sorted(known)}")


def known_rewards() -> list[str]:
    """Reward names a config may use: those the ``rewards`` package registers, and any registered since.

    Importing ``rewards`` imports torch (seconds), so the package's names are read from its
    sources (:func:`_rewards_in_sources`); once it is imported, its live registry adds the rewards
    registered at run time (a notebook's own ``@register_reward``).
    """
    names = set(_rewards_in_sources())
    registry = sys.modules.get("rewards.registry")
    if registry is not None:
        names.update(registry.available_rewards())
    return sorted(names)


@lru_cache(maxsize=1)
def _rewards_in_sources() -> frozenset[str]:
    """Names given to ``@register_reward("...")`` on the classes of the ``rewards`` package's modules."""
    spec = importlib.util.find_spec("rewards")  # finds the package without running its __init__
    names: set[str] = set()
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for source in sorted(Path(folder).glob("*.py")):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    names.update(_registered_name(d) for d in node.decorator_list if _registered_name(d))
    return frozenset(names)


def _registered_name(decorator: ast.expr) -> str | None:
    """``"x"`` for a ``@register_reward("x")`` decorator, else None."""
    if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name)
            and decorator.func.id == "register_reward" and decorator.args
            and isinstance(decorator.args[0], ast.Constant) and isinstance(decorator.args[0].value, str)):
        return decorator.args[0].value
    return None


def launched_num_processes() -> int:
    """The processes of this launch: ``WORLD_SIZE``, which ``accelerate launch`` sets (through
    ``torch.distributed.run``) for a multi-process run, else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def exit_on_config_error(err: ConfigError) -> NoReturn:
    """End a command-line script on a bad configuration: ``error: ...`` on one line, exit status 2.

    Only the first process of a multi-process launch prints it, so the line is not repeated per rank.
    """
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)


def load_config_or_exit(path: str | Path | None, overrides: list[str]) -> ExperimentConfig:
    """:func:`load_config` for a command-line script (checked for this launch's processes); a
    :class:`ConfigError` ends it through :func:`exit_on_config_error`."""
    try:
        return load_config(path, overrides, num_processes=launched_num_processes())
    except ConfigError as err:
        exit_on_config_error(err)


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved configuration as YAML (saved next to every run)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def resume_changes(saved_yaml: str, cfg: ExperimentConfig) -> list[str]:
    """The settings of ``cfg`` that differ from a run's saved ``config.yaml`` (its text), as
    ``"key (saved -> now)"``, leaving out :data:`RESUME_FREE_KEYS`.

    Keys are the schema's leaves (a mapping such as ``reward.weights`` is one value). A key one side
    lacks (a genrl version added or removed it since the run started) is not compared.
    """
    try:
        saved = yaml.safe_load(saved_yaml)
    except yaml.YAMLError as err:
        raise ConfigError(f"unreadable YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(saved, dict):
        raise ConfigError("it does not hold a mapping of config keys")
    now = yaml.safe_load(to_yaml(cfg))
    changes = []
    for key in _leaf_keys(cfg):
        if key.startswith(tuple(k for k in RESUME_FREE_KEYS if k.endswith("."))) or key in RESUME_FREE_KEYS:
            continue
        before, after = _lookup(saved, key), _lookup(now, key)
        if before is not _ABSENT and after is not _ABSENT and before != after:
            changes.append(f"{key} ({_short(before)} -> {_short(after)})")
    return changes


_ABSENT = object()


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(node):
        value = getattr(node, f.name)
        keys += _leaf_keys(value, f"{prefix}{f.name}.") if is_dataclass(value) else [prefix + f.name]
    return keys


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _last_trained_step(cfg: ExperimentConfig) -> int:
    """Exclusive end of the latest sampling step a policy-gradient algorithm can train."""
    s, t = cfg.sample, cfg.train
    if t.algorithm == "tp_grpo":  # TP-GRPO's window is always the first W steps, W < num_steps
        return s.window_size or s.num_steps - 1
    if s.window_size:  # every step of the window is trained (see FlowGRPO.num_train_units)
        return s.window_range[1] if s.window_range else s.num_steps
    return max(1, int(s.num_steps * t.timestep_fraction))
