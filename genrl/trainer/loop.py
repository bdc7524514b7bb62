"""The one training loop on accelerate: sample -> decode -> reward -> gather -> advantages -> update.

Algorithms (``genrl.algorithms``) decide what a rollout records, how rewards become advantages and
the loss of a batch; this loop owns everything else: prompts in groups across processes, LoRA,
EMA, evaluation, logging, checkpoints, resume and export.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genrl.algorithms import KRepeatSampler, LossContext, RolloutBatch, build_algorithm, family_weights
from genrl.config import (
    ConfigError,
    ExperimentConfig,
    check_group_layout,
    load_prompt_set,
    reward_terms,
    to_yaml,
)
from genrl.data import prompt_family
from genrl.generation import Generation, MissingCondition, generate
from genrl.grid import make_grid, save_image_atomically, scored_caption, spread_over_families
from genrl.media_sheets import save_media_sheet
from genrl.models import AUTO_FAMILY, adapter_class, place_module
from genrl.models.from_config import adapter_from_config, config_check
from genrl.models.loading import load_pipeline
from genrl.models.lora import (
    ReferencePolicy,
    add_lora,
    load_lora_state_dict,
    lora_config,
    lora_state_dict,
)
from genrl.utils.files import FolderLock, FolderLocked, atomic_write_path, replace_dir_atomically
from genrl.utils.quiet import quiet_hub_libraries
from rewards import WeightedSum
from rewards.media import Media, empty_tensor
from rewards.optional import require
from rewards.registry import RewardPool
from rewards.seeding import derived_seed

from .checkpoints import TRAINER_STATE_FILE, save_atomically
from .lifecycle import RunInterrupted, RunPlan, StopSignals, clear_run_records, plan_run, set_aside_damaged
from .metrics import MetricsLog, TrainingProgress, plot_reward_curve

logger = logging.getLogger(__name__)

GRID_IMAGES = 16  # evaluation images in each sample grid, spread over the prompt families
RATIO_HINT = ("the training forward does not reproduce the sampling forward; likely causes: a different batch "
              "size or order, mixed precision or CFG path differing between sampling and training, dropout in "
              "train mode, or non-deterministic attention kernels")


class TrainState:
    """Epochs completed, optimizer steps taken, images generated and training time; checkpointed with the rest."""

    def __init__(self) -> None:
        self.epoch = 0
        self.global_step = 0
        self.samples = 0  # training images generated, all processes
        self.train_seconds = 0.0  # wall time of sampling, rewards and updates (evaluation excluded)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step, "samples": self.samples,
                "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.samples, self.train_seconds = int(state.get("samples", 0)), float(state.get("train_seconds", 0.0))


class Trainer:
    """Runs an :class:`ExperimentConfig`; ``Trainer(cfg).train()`` is the whole job.

    A Trainer owns ``log.output_dir`` from its construction (a lock, released when :meth:`train`
    ends) and checks there, before any model loads, that the run neither mixes with nor silently
    replaces another one, and that the checkpoint it resumes is intact (:func:`plan_run`).
    """

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.log.output_dir)
        created = _missing_folders(self.output_dir)  # removed again if the set-up fails
        self.algorithm = build_algorithm(cfg.train.algorithm, cfg)
        self.units_per_batch = self.algorithm.num_train_units()
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),  # lets `accelerate launch --multi_gpu` run gloo processes on a CPU
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps * self.units_per_batch,
            log_with=list(cfg.log.log_with) or None,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                logging_dir=str(self.output_dir / "logs")))
        self._lock = FolderLock(self.output_dir)
        self._stop: StopSignals | None = None  # while train() runs
        self._loading: str | None = None  # the checkpoint file being loaded, which a resume error names
        try:
            self._plan = self._claim_output_dir()
            self._setup()
        except BaseException:
            self._lock.release()
            if self.accelerator.is_main_process:
                _remove_empty(created)
            raise

    # ----------------------------------------------------------------------------------- set-up
    def _claim_output_dir(self) -> RunPlan:
        """Lock ``log.output_dir`` and plan its use on the main process; every process gets the same
        plan or the same :class:`ConfigError` (a broadcast, so no process waits on one that failed)."""
        acc = self.accelerator
        plan, error = None, None
        if acc.is_main_process:
            try:
                if not self.output_dir.exists():  # refuse (say, --resume with nothing to resume) before the lock creates it
                    plan_run(self.output_dir, self.cfg.resume, self.cfg.log.overwrite, self.cfg)
                previous = self._lock.acquire()
                if previous:
                    logger.info("took over the lock of %s, left by %s, which is no longer running",
                                self.output_dir, previous)
                plan = plan_run(self.output_dir, self.cfg.resume, self.cfg.log.overwrite, self.cfg)
            except FolderLocked as err:
                error = ConfigError(f"log.output_dir={self.output_dir}: {err}; wait for that run to end, or "
                                    "choose another log.output_dir")
            except OSError as err:  # e.g. a folder that cannot be created
                error = ConfigError(f"log.output_dir={self.output_dir}: {err}")
            except ConfigError as err:
                error = err
        if acc.num_processes > 1:
            plan, message = broadcast_object_list([plan, None if error is None else str(error)], from_process=0)
            error = error or (ConfigError(message) if message else None)
        if error is not None:
            raise error
        return plan

    def _setup(self) -> None:
        """Seed, threads, prompts, model, rewards and the algorithm's own state."""
        cfg = self.cfg
        set_seed(cfg.seed, device_specific=True)
        if self.accelerator.device.type == "cpu":
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.accelerator.num_processes))
            torch.set_num_threads(cfg.cpu_threads or max(1, cores // max(1, local)))
        self.state = TrainState()
        self._sampled = 0  # this process's samples of the current epoch (sample_epoch counts them)
        self.metrics_log = MetricsLog(self.output_dir / "metrics.jsonl")
        self._setup_data()
        self._setup_model()
        self._setup_rewards()
        self._check_reward_modalities()
        self.algorithm.setup(self)

    def _setup_data(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        self.train_set = load_prompt_set("data.train_prompts", cfg.data.train_prompts)
        self.test_set = load_prompt_set("data.test_prompts", cfg.data.test_prompts)
        # a config loaded without a process count (load_config's default) was not checked against this launch
        check_group_layout(cfg.sample, acc.num_processes, len(self.train_set))
        weights = (family_weights([prompt_family(m) for m in self.train_set.metadata])
                   if cfg.data.balance == "family" else None)
        self.sampler = KRepeatSampler(len(self.train_set), cfg.sample.batch_size, cfg.sample.group_size,
                                      num_replicas=acc.num_processes, rank=acc.process_index, seed=cfg.seed,
                                      weights=weights)

    def _weight_dtype(self) -> torch.dtype:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.cfg.mixed_precision, torch.float32)

    def _setup_model(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        m = cfg.model
        if m.family != AUTO_FAMILY:  # an unknown family fails before a long download
            config_check(lambda: adapter_class(m.family), "model.family")
        kwargs = {"revision": m.revision} if m.revision else {}
        self.pipe = load_pipeline(m.pretrained, trust_remote_code=m.trust_remote_code, **kwargs)
        self.pipe.set_progress_bar_config(disable=True)
        self.adapter = adapter_from_config(cfg, self.pipe)
        self.adapter.place_frozen(acc.device, self._weight_dtype())
        transformer = self.adapter.transformer
        if cfg.lora.enabled:
            place_module(transformer, acc.device, self._weight_dtype())
            targets = cfg.lora.target_modules or list(self.adapter.default_lora_targets)
            params = add_lora(transformer, lora_config(cfg.lora.rank, cfg.lora.alpha, targets, cfg.lora.init))
            for p in params:  # trainable weights stay in fp32 under mixed precision
                p.data = p.data.float()
        else:
            transformer.to(acc.device)
            params = [p for p in transformer.parameters() if p.requires_grad]
        if m.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        if m.attention == "xformers":
            require("xformers")  # names the extra when it is missing
            transformer.enable_xformers_memory_efficient_attention()
        self.reference = ReferencePolicy(transformer) if self.algorithm.needs_reference() else None
        t = cfg.train
        optimizer = torch.optim.AdamW(params, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
                                      weight_decay=t.adam_weight_decay, eps=t.adam_epsilon)
        scheduler = get_scheduler("constant", optimizer)
        self.model, self.optimizer, self.lr_scheduler = acc.prepare(transformer, optimizer, scheduler)
        # the bare transformer under accelerate's wrappers, unwrapped once: unwrap_model walks the module
        # tree, and the rollouts call the model on every step
        self.unwrapped: torch.nn.Module = acc.unwrap_model(self.model)
        self.params = params
        # the decay diffusers computes from optimization_step is (1 + s) / (10 + s), capped at ema_decay, only
        # with these three settings (their defaults, spelled out because ema_step relies on them)
        self.ema = (EMAModel(params, decay=t.ema_decay, min_decay=0.0, update_after_step=0, use_ema_warmup=False)
                    if t.ema else None)
        # Objects saved with every checkpoint (name -> object with state_dict/load_state_dict); algorithms
        # add theirs with checkpoint_object. They go to one file loaded with weights_only=True, unlike
        # accelerate's register_for_checkpointing, which unpickles them with weights_only=False.
        self._checkpointed: dict[str, Any] = {"sampler": self.sampler, "train_state": self.state}
        if self.ema is not None:
            self.ema.to(acc.device)
            self._checkpointed["ema"] = self.ema
        acc.register_save_state_pre_hook(self._save_state_hook)
        acc.register_load_state_pre_hook(self._load_state_hook)

    def checkpoint_object(self, name: str, obj: Any) -> None:
        """Save ``obj.state_dict()`` with every checkpoint and restore it on resume (call before training)."""
        if name in self._checkpointed:
            raise ValueError(f"a checkpointed object is already named {name!r}")
        self._checkpointed[name] = obj

    @staticmethod
    def _lora_file(adapter: str) -> str:
        return "lora.safetensors" if adapter == "default" else f"lora-{adapter}.safetensors"

    def _save_state_hook(self, models, weights, output_dir) -> None:
        if self.accelerator.is_main_process:
            torch.save({name: obj.state_dict() for name, obj in self._checkpointed.items()},
                       os.path.join(output_dir, TRAINER_STATE_FILE))
        if not self.cfg.lora.enabled:
            return
        # checkpoints hold the adapter(s) only, not a copy of the frozen base model
        model = self.accelerator.unwrap_model(models[0])
        if self.accelerator.is_main_process:
            for adapter in model.peft_config:  # every adapter, e.g. DiffusionNFT's old policy too
                save_file(lora_state_dict(model, adapter), os.path.join(output_dir, self._lora_file(adapter)))
        if weights:
            weights.pop()

    def _load_state_hook(self, models, input_dir) -> None:
        path = self._loading = os.path.join(input_dir, TRAINER_STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{input_dir} is not a genrl checkpoint ({TRAINER_STATE_FILE} missing)")
        states = torch.load(path, map_location="cpu", weights_only=True)
        for name, obj in self._checkpointed.items():
            if name not in states:
                raise KeyError(f"checkpoint {input_dir} has no state for {name!r}; was it written by another "
                               "algorithm or configuration?")
            obj.load_state_dict(states[name])
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
        if self.cfg.lora.enabled:
            model = self.accelerator.unwrap_model(models.pop())
            for adapter in model.peft_config:
                path = self._loading = os.path.join(input_dir, self._lora_file(adapter))
                load_lora_state_dict(model, load_file(path, device=str(self.accelerator.device)), adapter)
        self._loading = None  # accelerate loads the optimizer, scheduler and RNG states next

    def _setup_rewards(self) -> None:
        """The training reward (a weighted sum of ``reward_terms``) and the evaluation rewards, built from one pool:
        a metric with a training term's name and options shares its loaded model."""
        r, pool = self.cfg.reward, RewardPool()
        terms = reward_terms(r)
        self.reward_fn = config_check(lambda: WeightedSum({label: pool.build(name, **options)
                                                            for label, name, _, options, _ in terms},
                                                           weights={label: w for label, _, w, _, _ in terms}),
                                       "reward.train" if r.train else "reward.weights")
        self._reward_keys = {f"train:{label}": key for label, _, _, _, key in terms}
        self.eval_rewards = {metric: pool.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
                             for metric, spec in r.eval.items()}
        self._reward_keys.update({f"eval:{metric}": f"reward.eval.{metric}" for metric in r.eval})

    def _check_reward_modalities(self) -> None:
        """Every training and evaluation reward scores what the model family generates, and the training reward
        is differentiable when the algorithm backpropagates it."""
        if self.algorithm.needs_differentiable_reward:
            flat = [(label, r) for label, r in self.reward_fn.components.items() if not r.differentiable]
            if flat:
                label, reward = flat[0]
                raise ConfigError(f"{self._reward_keys[f'train:{label}']}: train.algorithm {self.cfg.train.algorithm!r} "
                                  f"backpropagates the reward, and reward {reward.name!r} is not differentiable")
        kind = self.adapter.media_kind
        # each reward's own check of what it is given (kind, audio rate), nested rewards included, on no samples
        probe = self.adapter.as_media(empty_tensor(kind))
        named = [(self._reward_keys[f"train:{label}"], r) for label, r in self.reward_fn.components.items()]
        named += [(self._reward_keys[f"eval:{metric}"], r) for metric, r in self.eval_rewards.items()]
        for key, reward in named:
            try:
                reward.media_tensor(probe)
            except ValueError as err:
                raise ConfigError(f"{key}: {err} (model family {self.adapter.family!r} generates {kind})") from None

    # ----------------------------------------------------------------------------------- sampling
    def _generators(self, *parts) -> list[torch.Generator]:
        return [torch.Generator(device=self.accelerator.device).manual_seed(derived_seed(*p)) for p in parts]

    @torch.no_grad()
    def sample_batch(self, epoch: int, iteration: int, indices: list[int]) -> RolloutBatch:
        """Roll out one batch of prompts (this process's slice of a sampling iteration)."""
        cfg, acc, adapter = self.cfg, self.accelerator, self.adapter
        self._notice_stop()
        prompts = [self.train_set.prompts[i] for i in indices]
        rank = acc.process_index
        noise_keys = [(cfg.seed, "init", epoch, iteration, i) if cfg.sample.same_latent
                      else (cfg.seed, "init", epoch, iteration, rank, b) for b, i in enumerate(indices)]
        step_gens = self._generators(*[(cfg.seed, "sde", epoch, iteration, rank, b) for b in range(len(indices))])
        window_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "window", epoch, iteration, rank))
        sigmas = adapter.schedule(cfg.sample.num_steps).to(acc.device)
        window = self.algorithm.rollout_window(cfg.sample.num_steps, window_gen)
        self.model.eval()
        metadata = [self.train_set.metadata[i] for i in indices]
        with acc.autocast(), self.algorithm.sampling_policy(self):
            out = self._generate(prompts, metadata, indices, "data.train_prompts", sigmas=sigmas,
                                 noise_generators=self._generators(*noise_keys), model=self.unwrapped,
                                 step_type=cfg.sample.step_type, noise_level=cfg.sample.noise_level, window=window,
                                 step_generators=step_gens, ode_solver=cfg.sample.solver)
            batch = RolloutBatch(torch.tensor(indices, device=acc.device), prompts, metadata, out.cond, sigmas,
                                 out.trajectory, out.media, extras={"seed_key": (cfg.seed, epoch, iteration, rank)})
            self.algorithm.after_sampling(self, batch)
        self._score_batch(batch)
        batch.media = batch.media.stored()  # only an 8/16-bit CPU copy waits for the update
        return batch

    def _score_batch(self, batch: RolloutBatch) -> None:
        """The training reward of a batch right after it is decoded (its components kept for logging)."""
        out = self.reward_fn(batch.media, batch.prompts, batch.metadata)
        batch.rewards = out.scores.to(self.accelerator.device, torch.float32)
        batch.extras["reward_components"] = {name: out.info[name] for name in self.reward_fn.components}

    def _generate(self, prompts: list[str], metadata: list[dict], indices: list[int], source: str,
                  **sampling: Any) -> Generation:
        """:func:`genrl.generation.generate`, with a prompt that lacks a condition named by its index in ``source``."""
        try:
            return generate(self.adapter, prompts, metadata, **sampling)
        except MissingCondition as err:
            raise ConfigError(f"{source}: prompt {indices[err.index]} has no {err.key!r} field, which model family "
                              f"{err.family!r} conditions on") from None

    def sample_epoch(self, epoch: int) -> list[RolloutBatch]:
        """The epoch's ``sample.num_batches_per_epoch`` batches, in the sampler's order (advancing it)."""
        batches = [self.sample_batch(epoch, self.sampler.iteration, indices)
                   for _b, indices in zip(range(self.cfg.sample.num_batches_per_epoch), self.sampler, strict=False)]
        self._sampled += sum(len(b.prompts) for b in batches)
        return batches

    # ----------------------------------------------------------------------------------- rewards
    def score_epoch(self, batches: list[RolloutBatch]) -> dict[str, float]:
        """Gather the local samples' rewards with their prompt ids and set advantages per sample."""
        acc = self.accelerator
        components: dict[str, list[torch.Tensor]] = {}
        for batch in batches:  # each was scored when it was sampled (sample_batch)
            for name, values in batch.extras["reward_components"].items():
                components.setdefault(name, []).append(values.to(acc.device, torch.float32))
        local = torch.cat([b.rewards for b in batches])
        all_rewards = acc.gather(local)
        all_ids = acc.gather(torch.cat([b.prompt_index for b in batches]))
        finite = torch.isfinite(all_rewards)
        if not finite.any():
            raise FloatingPointError("every reward of this epoch is NaN/inf; check the reward models "
                                     f"({sorted(self.reward_fn.components)}); no update was made")
        extra = self.algorithm.advantage_inputs(batches)  # e.g. TP-GRPO's per-step rewards, gathered like rewards
        if extra is None:
            adv = self.algorithm.compute_advantages(all_rewards.cpu(), all_ids.cpu().tolist())
        else:
            adv = self.algorithm.compute_advantages(all_rewards.cpu(), all_ids.cpu().tolist(),
                                                    extra=acc.gather(extra.to(acc.device)).cpu())
        n = local.numel()
        start = acc.process_index * n
        mine_adv = adv.advantages[start:start + n].to(acc.device)
        mine_keep = adv.keep[start:start + n].to(acc.device)
        offset = 0
        for batch in batches:
            size = batch.rewards.numel()
            batch.advantages, batch.keep = mine_adv[offset:offset + size], mine_keep[offset:offset + size]
            offset += size
        metrics = {"reward/mean": all_rewards[finite].mean().item(), "reward/std": all_rewards[finite].std().item(),
                   "reward/nonfinite": adv.stats["nonfinite"], "zero_std_ratio": adv.stats["zero_std_ratio"],
                   "kept_fraction": adv.keep.float().mean().item()}
        if "banned_prompts" in adv.stats:
            metrics["banned_prompts"] = adv.stats["banned_prompts"]
        for name, values in components.items():
            gathered = acc.gather(torch.cat(values))
            good = gathered[torch.isfinite(gathered)]
            if good.numel():
                metrics[f"reward/{name}/mean"] = good.mean().item()
                metrics[f"reward/{name}/std"] = good.std().item() if good.numel() > 1 else 0.0
        return metrics

    # ----------------------------------------------------------------------------------- update
    def optimize_epoch(self, batches: list[RolloutBatch]) -> dict[str, float]:
        """Inner epochs of (batch, recorded step) units: loss, backward, and an optimizer step per accumulation."""
        cfg, acc = self.cfg, self.accelerator
        ctx = LossContext(self.adapter, self.model, self.reference)
        sums: dict[str, list[float]] = {}
        first_ratio_dev = None
        # on one process a batch whose samples are all masked can skip its forward passes
        skip_allowed = acc.num_processes == 1 and self.algorithm.masked_samples_carry_no_loss
        self.model.train()
        for _ in range(cfg.train.num_inner_epochs):
            backward_in_cycle = False
            for batch in batches:
                self._notice_stop()
                positions = self.algorithm.train_positions(batch)
                for pos in positions:
                    with acc.accumulate(self.model):
                        # nothing to learn from an all-masked batch: on one process its forward can be
                        # skipped (after the first unit, which checks the on-policy ratio)
                        skip = skip_allowed and not batch.keep.any() and first_ratio_dev is not None
                        if not skip:
                            with acc.autocast():
                                loss, metrics = self.algorithm.loss(ctx, batch, pos)
                            if first_ratio_dev is None:
                                first_ratio_dev = metrics.get("ratio_max_dev", 0.0)
                            if not torch.isfinite(loss):
                                raise FloatingPointError(f"non-finite loss at epoch {self.state.epoch}, step "
                                                         f"{batch.trajectory.steps[pos]}: {metrics}")
                            acc.backward(loss)
                            backward_in_cycle = True
                            for k, v in metrics.items():
                                sums.setdefault(k, []).append(v)
                        if acc.sync_gradients:
                            if backward_in_cycle:
                                grad_norm = acc.clip_grad_norm_(self.params, cfg.train.max_grad_norm)
                                sums.setdefault("grad_norm", []).append(float(grad_norm))
                                self.optimizer.step()
                                self.lr_scheduler.step()
                                self._after_optimizer_step()
                            self.optimizer.zero_grad(set_to_none=True)
                            backward_in_cycle = False
        out = {f"train/{k}": float(np.mean(v)) for k, v in sums.items()}
        if first_ratio_dev is not None:
            out["train/first_ratio_max_dev"] = first_ratio_dev
            if first_ratio_dev > cfg.log.ratio_tolerance:
                warnings.warn(f"epoch {self.state.epoch}: the on-policy importance ratio deviates from 1 by "
                              f"{first_ratio_dev:.2e} (> log.ratio_tolerance={cfg.log.ratio_tolerance}); {RATIO_HINT}",
                              RuntimeWarning, stacklevel=2)
        return out

    def _after_optimizer_step(self) -> None:
        self.state.global_step += 1
        if self.ema is not None:
            ema_step(self.ema, self.params, self.state.global_step, self.cfg.train.ema_update_every)

    # ----------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], Media | None, list[str]]:
        """Deterministic (ODE) sampling of the test prompts at ``eval_num_steps`` with the EMA weights, the
        evaluation guidance scale and solver (``sample.eval_guidance_scale``, ``sample.eval_solver``; the
        training ones when unset).

        Returns the metrics (means over all processes) and, for a sample grid, up to ``GRID_IMAGES``
        of this process's samples (stored media; None when it has none), of prompts spread over the prompt
        families, with their captions (the prompt and each evaluation reward's verdict on the sample).
        """
        cfg, acc, adapter = self.cfg, self.accelerator, self.adapter
        n = cfg.sample.eval_images_per_prompt
        jobs = [(i, r) for i in range(len(self.test_set)) for r in range(n)][acc.process_index::acc.num_processes]
        guidance = cfg.sample.eval_guidance_scale  # None: the adapter's, sample.guidance_scale
        solver = cfg.sample.eval_solver or cfg.sample.solver
        sigmas = adapter.schedule(cfg.sample.eval_num_steps).to(acc.device)
        scores: dict[str, list[torch.Tensor]] = {k: [] for k in self.eval_rewards}
        families = [prompt_family(m) for m in self.test_set.metadata]
        family_names = sorted({f for f in families if f is not None})
        position = {name: k for k, name in enumerate(family_names)}
        family_index = torch.tensor([position.get(families[i], -1) for i, _ in jobs], dtype=torch.long,
                                    device=acc.device)
        grid = _grid_positions(jobs, families)
        in_grid, kept = set(grid), {}
        self.model.eval()
        with self._ema_weights():
            for start in range(0, len(jobs), cfg.sample.eval_batch_size):
                self._notice_stop()
                chunk = jobs[start:start + cfg.sample.eval_batch_size]
                prompts = [self.test_set.prompts[i] for i, _ in chunk]
                metadata = [self.test_set.metadata[i] for i, _ in chunk]
                with acc.autocast():  # the deterministic sampler; negative prompts if the scale uses CFG
                    media = self._generate(prompts, metadata, [i for i, _ in chunk], "data.test_prompts",
                                           sigmas=sigmas, model=self.unwrapped, guidance_scale=guidance,
                                           ode_solver=solver, noise_generators=self._generators(
                                               *[(cfg.seed, "eval", i, r) for i, r in chunk])).media
                for metric, reward in self.eval_rewards.items():
                    scores[metric].append(reward(media, prompts, metadata).scores.to(acc.device, torch.float32))
                kept.update({start + k: media.select(slice(k, k + 1)).stored() for k in range(len(chunk))
                             if start + k in in_grid})
        mine = {metric: torch.cat(values).cpu() for metric, values in scores.items() if values}
        captions = [scored_caption(self.test_set.prompts[jobs[p][0]], {m: float(v[p]) for m, v in mine.items()})
                    for p in grid]
        metrics = {}
        for metric, values in scores.items():  # processes hold unequal shares: reduce sums and counts
            local = torch.cat(values) if values else torch.zeros(0, device=acc.device)
            good = torch.isfinite(local)
            totals = acc.reduce(torch.stack([local[good].sum(), good.sum().float(), (~good).sum().float()]), "sum")
            metrics[f"eval/{metric}"] = (totals[0] / totals[1].clamp(min=1)).item()
            if totals[2] > 0:
                metrics[f"eval/{metric}/nonfinite"] = totals[2].item()
                warnings.warn(f"evaluation reward {metric!r} was non-finite for {int(totals[2])} images; "
                              "they are left out of its mean", RuntimeWarning, stacklevel=2)
            if family_names:
                metrics.update(self._family_means(metric, local, family_index, family_names))
        return metrics, Media.cat([kept[p] for p in grid]) if grid else None, captions

    def _family_means(self, metric: str, local: torch.Tensor, family_index: torch.Tensor,
                      names: list[str]) -> dict[str, float]:
        """Per-family means of one evaluation reward and their mean, GenEval's overall score."""
        n = len(names)
        keep = torch.isfinite(local) & (family_index >= 0)
        sums = torch.zeros(n, device=local.device).index_add_(0, family_index[keep], local[keep])
        counts = torch.zeros(n, device=local.device).index_add_(0, family_index[keep], torch.ones_like(local[keep]))
        sums, counts = self.accelerator.reduce(torch.stack([sums, counts]), "sum")
        out = {f"eval/{metric}/{name}": (sums[k] / counts[k]).item() for k, name in enumerate(names) if counts[k] > 0}
        if out:
            out[f"eval/{metric}/family_mean"] = float(np.mean(list(out.values())))
        return out

    @contextlib.contextmanager
    def _ema_weights(self):
        """Swap the EMA weights into the trainable parameters for the duration (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    # ----------------------------------------------------------------------------------- the loop
    def _start_run(self) -> None:
        """Act on the run's plan: delete an overwritten run's records, load the resume point, then (only
        then) write ``config.yaml``, drop the metrics the resumed run re-does, and open the trackers."""
        cfg, acc, plan = self.cfg, self.accelerator, self._plan
        if acc.is_main_process:
            for note in plan.notes:
                logger.warning("%s", note)
            clear_run_records(plan.clear)
            set_aside_damaged(plan.set_aside)
        acc.wait_for_everyone()
        self._resume()
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if plan.resume_from is not None:
                self.metrics_log.truncate_after(self.state.epoch)
            _write_text_atomically(self.output_dir / "config.yaml", to_yaml(cfg))
        # tensorboard drops the events of the epochs the resumed run re-does, as the JSONL log does
        init_kwargs = {"tensorboard": {"purge_step": self.state.epoch + 1}} if plan.resume_from is not None else {}
        acc.init_trackers("genrl", config=_flat_scalars(asdict(cfg)), init_kwargs=init_kwargs)

    def _resume(self) -> None:
        """Load the run's verified resume point, if it has one; a :class:`ConfigError` if it does not fit."""
        path = self._plan.resume_from
        if path is None:
            return
        try:
            self.accelerator.load_state(str(path))
        except Exception as err:
            # its files are intact (or predate manifests), so an error about its contents means it does
            # not fit this run; anything else (out of memory, a device error) is not about the checkpoint
            if not _is_load_error(err):
                raise
            raise ConfigError(f"cannot resume from {self._loading or path}: {type(err).__name__}: "
                              f"{_one_line(err)}") from err
        finally:
            self._loading = None
        logger.info("resumed from %s at epoch %d", path, self.state.epoch)

    def _log(self, record: dict, grid: tuple[Media | None, list[str]] | None = None) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            self.metrics_log.append(record)
            if grid is not None and grid[0] is not None:
                media, captions = grid
                path = self.output_dir / "grids" / f"eval-epoch-{record['epoch']:06d}.png"
                if media.kind == "image":
                    title = (f"epoch {record['epoch']}: held-out prompts, deterministic sampler"
                             + (", EMA weights" if self.ema is not None else ""))
                    images = media.tensor.permute(0, 2, 3, 1).numpy()
                    save_image_atomically(make_grid(images, captions, columns=8, cell=128, caption_lines=5,
                                                    title=title), path)
                else:  # a GIF grid and frame strip of videos, or a folder of WAVs with an HTML index
                    save_media_sheet(media, captions, path, columns=8)
        acc.log({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def train(self) -> dict:
        """Run (or resume) the configured number of epochs; returns the last epoch's metrics.

        A first SIGINT or SIGTERM ends the run once the current epoch is done (its scheduled
        evaluation included), with a checkpoint, the metrics and the reward curve written, by raising
        :class:`RunInterrupted`; a second one aborts at once. The folder's lock is released either way.
        """
        try:
            with StopSignals() as self._stop:
                return self._train(self._stop)
        finally:
            self._stop = None
            self._lock.release()

    def _train(self, stop: StopSignals) -> dict:
        cfg, acc = self.cfg, self.accelerator
        self._start_run()
        if self.state.epoch == 0:
            metrics, images, captions = self.evaluate()
            self._log({"epoch": 0, **metrics}, (images, captions))
        last: dict = {}
        shown: dict[str, str] = {}
        progress = TrainingProgress(epochs=cfg.epochs, budget_minutes=cfg.time_budget_minutes, epoch=self.state.epoch,
                                    train_seconds=self.state.train_seconds, disable=not acc.is_local_main_process)
        while self.state.epoch < cfg.epochs:
            record = self._train_epoch()
            epoch = self.state.epoch
            due = epoch == cfg.epochs or (cfg.log.eval_every and epoch % cfg.log.eval_every == 0)
            evaluation = self.evaluate() if due else None
            # after the evaluation, so a signal during it stops this epoch, not the next
            signum, out_of_time = self._agree_on_stopping(stop)
            done = epoch == cfg.epochs or out_of_time
            stopping = signum is not None and not done
            if done and evaluation is None:  # the time budget ended the run: its final evaluation
                evaluation = self.evaluate()
            grid = None
            if evaluation is not None:
                metrics, images, captions = evaluation
                record.update(metrics)
                if done or (cfg.log.grid_every and epoch % cfg.log.grid_every == 0):
                    grid = (images, captions)
            self._log(record, grid)
            if done or stopping or (cfg.log.save_every and self.state.epoch % cfg.log.save_every == 0):
                saved = save_atomically(acc, self.output_dir / "checkpoints", self.state.epoch,
                                        cfg.log.keep_checkpoints)
            if "reward/mean" in record:  # an algorithm with its own epoch may not gather rewards
                shown.update({"reward": f"{record['reward/mean']:.3f}"})
            shown.update({f"eval_{k[5:]}": f"{v:.3f}" for k, v in record.items() if k.startswith("eval/")
                          and k.count("/") == 1})
            progress.advance(self.state.epoch, self.state.train_seconds, shown)
            last = record
            if stopping:
                progress.close()
                self._write_curve()
                acc.end_training()
                how = ("without --overwrite (log.overwrite=true) and with --resume" if cfg.log.overwrite
                       else "with --resume")
                raise RunInterrupted(f"stopped by {signal.Signals(signum).name} after epoch {self.state.epoch} of "
                                     f"{cfg.epochs}, saved in {saved}; to continue, run the same command {how}", signum)
            if done:
                break
        progress.finish()
        self._write_curve()
        self.export()
        acc.end_training()
        return last

    def _train_epoch(self) -> dict:
        """Sample, score and learn from one epoch; returns its record (evaluation not included)."""
        acc = self.accelerator
        epoch = self.state.epoch
        started = time.perf_counter()
        self._sampled = 0  # counted by sample_epoch
        record = {"epoch": epoch + 1, **self.algorithm.run_epoch(self, epoch)}  # the epoch belongs to the algorithm
        self.state.epoch = epoch + 1
        self.state.samples += acc.num_processes * self._sampled
        self.state.train_seconds += time.perf_counter() - started
        record.update({"samples": self.state.samples, "time/train_s": round(self.state.train_seconds, 2)})
        return record

    def _notice_stop(self) -> None:
        """Report a stop signal that arrived since the last batch (the signal handler does not log)."""
        if self._stop is not None:
            self._stop.announce()

    def _agree_on_stopping(self, stop: StopSignals) -> tuple[int | None, bool]:
        """The stop signal any process got (None: none did; the highest number if they differ), and
        whether any ran out of its time budget.

        Processes get a signal at different moments (or only one of them does) and each times its own
        epochs, so both are taken from all of them, in one all-reduce (max) that every process makes
        once per epoch: they all stop after the same epoch, and their collectives keep matching.
        """
        cfg = self.cfg
        stop.announce()
        out_of_time = bool(cfg.time_budget_minutes) and self.state.train_seconds >= 60 * cfg.time_budget_minutes
        flags = torch.tensor([float(stop.signum or 0), float(out_of_time)], device=self.accelerator.device)
        signum, late = (int(v) for v in self.accelerator.reduce(flags, "max").tolist())
        return signum or None, bool(late)

    def _write_curve(self) -> None:
        if self.accelerator.is_main_process:
            plot_reward_curve(self.metrics_log.records(), self.output_dir / "reward_curve.png",
                              title=f"{self.output_dir.name}: training reward and evaluation by epoch")

    # ----------------------------------------------------------------------------------- export
    def _merged_pipeline(self, lora_dir: Path):
        """A fresh copy of the base pipeline with the exported adapter fused in (the path users take)."""
        m = self.cfg.model
        pipe = load_pipeline(m.pretrained, trust_remote_code=m.trust_remote_code,
                             **({"revision": m.revision} if m.revision else {}))
        return self.adapter.merge_lora(pipe, lora_dir)

    def export(self) -> Path:
        """Write ``final/lora`` (diffusers LoRA format, EMA weights if enabled) and ``final/pipeline``
        (the merged pipeline, when ``log.export_merged``; the fully fine-tuned one otherwise)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        final = self.output_dir / "final"
        if acc.is_main_process:
            with self._ema_weights():
                if self.cfg.lora.enabled:
                    replace_dir_atomically(final / "lora", lambda d: self.adapter.export_lora(d, self.unwrapped))
                else:
                    replace_dir_atomically(final / "pipeline", self.pipe.save_pretrained)
            if self.cfg.lora.enabled and self.cfg.log.export_merged:
                with quiet_hub_libraries():
                    replace_dir_atomically(final / "pipeline",
                                           lambda d: self._merged_pipeline(final / "lora").save_pretrained(d))
            logger.info("exported %s", ", ".join(str(p) for p in sorted(final.iterdir())))
        acc.wait_for_everyone()
        return final


def _grid_positions(jobs: list[tuple[int, int]], families: list[str | None]) -> list[int]:
    """Positions in ``jobs`` ((prompt, seed) pairs) of the images a sample grid shows: the first image of
    up to ``GRID_IMAGES`` prompts, spread over the prompt families."""
    first: dict[int, int] = {}
    for position, (prompt, _) in enumerate(jobs):
        first.setdefault(prompt, position)
    candidates = list(first.values())
    picked = spread_over_families([families[jobs[p][0]] for p in candidates], GRID_IMAGES)
    return [candidates[k] for k in picked]


def ema_step(ema: EMAModel, params: list[torch.nn.Parameter], optimizer_step: int, every: int) -> bool:
    """The reference's EMA schedule (flow_grpo's ``EMAModuleWrapper``): after optimizer step ``s``, when
    ``(s + 1) % every == 0``, ``ema += (1 - d) (param - ema)`` with ``d = min((1 + s) / (10 + s), decay)``.

    Returns whether it updated. diffusers' EMAModel would count its own updates as ``s`` (so the first
    update copies the weights, and the decay reaches 0.9 after 80 updates, not 80 optimizer steps);
    it is handed the optimizer step instead, which also makes a resumed EMA continue exactly. The
    reference calls its EMA once per sampling batch, so with gradient accumulation over k batches it
    applies a step's update k times; here it is applied once per optimizer step.
    """
    if (optimizer_step + 1) % every:
        return False
    # EMAModel.step adds 1 to optimization_step and get_decay subtracts it again: the decay uses s
    ema.optimization_step = optimizer_step
    ema.step(params)
    return True


def _is_load_error(err: Exception) -> bool:
    """Whether ``err``, raised by ``load_state``, says a checkpoint's contents do not fit: a missing file or
    key, a state of the wrong size (``load_state_dict``'s mismatches), a file torch or safetensors cannot read."""
    if isinstance(err, (KeyError, ValueError, FileNotFoundError, pickle.UnpicklingError, SafetensorError)):
        return True
    first = str(err).lstrip().split("\n", 1)[0]
    return (isinstance(err, RuntimeError) and not isinstance(err, torch.OutOfMemoryError)
            and first.startswith(("Error(s) in loading state_dict", "PytorchStreamReader")))


def _one_line(err: Exception) -> str:
    """An error's message on one line: its first line, and the first item of a list it introduces
    (``load_state_dict`` lists every mismatched tensor) with how many more there are."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else err
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}" + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
    return lines[0] if lines else type(err).__name__


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: what a failed start created and left unused."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_text_atomically(path: Path, text: str) -> None:
    with atomic_write_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _flat_scalars(tree: dict, prefix: str = "") -> dict:
    """Flatten a nested config to the scalar values trackers accept (lists and dicts become strings)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_scalars(value, name + ".") if value and all(isinstance(v, dict) for v in value.values())
                       else {name: str(value)})
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value if value is not None else "None"
        else:
            out[name] = str(value)
    return out


__all__ = ["TrainState", "Trainer", "derived_seed"]
