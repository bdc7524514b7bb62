"""The generation service: the epoch's rollouts of training prompts, seeded per (epoch, iteration, process,
sample), each batch scored right after it is decoded and kept as a stored CPU copy."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import torch
from accelerate import Accelerator

from genrl.algorithms import Algorithm, KRepeatSampler, RolloutBatch, TrainerContext
from genrl.config import ConfigError, ExperimentConfig
from genrl.data import PromptDataset
from genrl.generation import Generation, MissingCondition, generate
from genrl.models.embedding_cache import PromptEmbeddingCache
from genrl.models.from_config import config_check
from rewards.seeding import derived_seed

from .model_state import ModelState
from .scoring import RewardService


class RolloutService:
    """Samples ``sample.num_batches_per_epoch`` batches per epoch in the prompt sampler's order.

    ``context`` is handed to the algorithm's hooks (:meth:`Algorithm.sampling_policy`,
    :meth:`Algorithm.after_sampling`); ``before_batch`` runs before every batch (the trainer reports a stop
    signal there). ``sampled`` counts this process's samples since :meth:`start_epoch`.
    """

    def __init__(self, cfg: ExperimentConfig, accelerator: Accelerator, models: ModelState, algorithm: Algorithm,
                 train_set: PromptDataset, sampler: KRepeatSampler, rewards: RewardService, context: TrainerContext,
                 before_batch: Callable[[], None] = lambda: None) -> None:
        self.cfg, self.accelerator, self.models, self.algorithm = cfg, accelerator, models, algorithm
        self.train_set, self.sampler, self.rewards, self.context = train_set, sampler, rewards, context
        self.before_batch = before_batch
        self.sampled = 0
        self._scorer: ThreadPoolExecutor | None = None  # the scoring thread of sample.overlap_scoring
        # training and evaluation share it (keyed by prompt and guidance scale); None: encode every batch
        self.embedding_cache = (config_check(lambda: PromptEmbeddingCache(models.adapter),
                                             "sample.cache_prompt_embeddings")
                                if cfg.sample.cache_prompt_embeddings else None)

    def generators(self, *parts) -> list[torch.Generator]:
        """One generator on the device per key tuple, seeded by :func:`derived_seed`."""
        return [torch.Generator(device=self.accelerator.device).manual_seed(derived_seed(*p)) for p in parts]

    def generate(self, prompts: list[str], metadata: list[dict], indices: list[int], source: str,
                 **sampling: Any) -> Generation:
        """:func:`genrl.generation.generate`, with a prompt that lacks a condition named by its index in ``source``."""
        encode = self.embedding_cache.encode if self.embedding_cache is not None else None
        try:
            return generate(self.models.adapter, prompts, metadata, encode=encode, **sampling)
        except MissingCondition as err:
            raise ConfigError(f"{source}: prompt {indices[err.index]} has no {err.key!r} field, which model family "
                              f"{err.family!r} conditions on") from None

    def sample_batch(self, epoch: int, iteration: int, indices: list[int]) -> RolloutBatch:
        """Roll out one batch of prompts (this process's slice of a sampling iteration), scored."""
        batch = self.roll_out(epoch, iteration, indices)
        self.score(batch)
        return batch

    @torch.no_grad()  # also on the scoring thread: grad mode is per thread
    def score(self, batch: RolloutBatch) -> RolloutBatch:
        """Score a rolled-out batch, then keep only an 8/16-bit CPU copy of its media for the update."""
        self.rewards.score_batch(batch)
        batch.media = batch.media.stored()
        return batch

    @torch.no_grad()
    def roll_out(self, epoch: int, iteration: int, indices: list[int]) -> RolloutBatch:
        """Roll out one batch of prompts (this process's slice of a sampling iteration), not yet scored."""
        cfg, acc, models = self.cfg, self.accelerator, self.models
        self.before_batch()
        prompts = [self.train_set.prompts[i] for i in indices]
        rank = acc.process_index
        noise_keys = [(cfg.seed, "init", epoch, iteration, i) if cfg.sample.same_latent
                      else (cfg.seed, "init", epoch, iteration, rank, b) for b, i in enumerate(indices)]
        step_gens = self.generators(*[(cfg.seed, "sde", epoch, iteration, rank, b) for b in range(len(indices))])
        window_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "window", epoch, iteration, rank))
        sigmas = models.adapter.schedule(cfg.sample.num_steps).to(acc.device)
        window = self.algorithm.rollout_window(cfg.sample.num_steps, window_gen)
        models.model.eval()
        metadata = [self.train_set.metadata[i] for i in indices]
        with acc.autocast(), self.algorithm.sampling_policy(self.context):
            out = self.generate(prompts, metadata, indices, "data.train_prompts", sigmas=sigmas,
                                noise_generators=self.generators(*noise_keys), model=models.unwrapped,
                                step_type=cfg.sample.step_type, noise_level=cfg.sample.noise_level, window=window,
                                step_generators=step_gens, ode_solver=cfg.sample.solver)
            batch = RolloutBatch(torch.tensor(indices, device=acc.device), prompts, metadata, out.cond, sigmas,
                                 out.trajectory, out.media, extras={"seed_key": (cfg.seed, epoch, iteration, rank)})
            self.algorithm.after_sampling(self.context, batch)
        return batch

    def start_epoch(self) -> None:
        self.sampled = 0

    def sample_epoch(self, epoch: int) -> list[RolloutBatch]:
        """The epoch's ``sample.num_batches_per_epoch`` batches, in the sampler's order (advancing it).

        With ``sample.overlap_scoring`` each batch is scored on a worker thread while the next one samples (the
        same scores: the reward sees the same media, and nothing it computes depends on timing); the epoch
        returns once every batch is scored, and a reward's error is raised here."""
        plan = zip(range(self.cfg.sample.num_batches_per_epoch), self.sampler, strict=False)
        if not self.cfg.sample.overlap_scoring:
            batches = [self.sample_batch(epoch, self.sampler.iteration, indices) for _b, indices in plan]
        else:
            if self._scorer is None:
                self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrl-scoring")
            pending = []
            try:
                for _b, indices in plan:
                    batch = self.roll_out(epoch, self.sampler.iteration, indices)
                    pending.append(self._scorer.submit(self.score, batch))
            finally:  # scoring that was started finishes (or fails) before the epoch moves on
                wait(pending)
            batches = [future.result() for future in pending]
        self.sampled += sum(len(b.prompts) for b in batches)
        return batches
