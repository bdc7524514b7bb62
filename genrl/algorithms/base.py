"""The algorithm seam: what a rollout records, how rewards become advantages, and the loss of a batch.

An algorithm never owns the training loop; :mod:`genrl.trainer` calls these methods in order.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from genrl.sampling.rollout import Trajectory
from rewards.media import Media
from rewards.name_registry import Registry

from .advantages import Advantages


@dataclass
class RolloutBatch:
    """One sampling batch of this process, as the trainer hands it to the algorithm.

    ``rewards`` are set right after the batch is decoded, and ``media`` becomes a stored 8/16-bit CPU copy;
    ``advantages`` and ``keep`` (per sample) are filled in after rewards are gathered.
    """

    prompt_index: torch.Tensor  # (B,) dataset indices: the group ids
    prompts: list[str]
    metadata: list[dict]
    cond: Any  # the adapter's conditioning (embeddings computed once per rollout)
    sigmas: torch.Tensor  # (T + 1,) the schedule the rollout used
    trajectory: Trajectory | None  # None for a unit generated inside its loss (reward backpropagation)
    media: Media | None = None  # float on the device until scored, then the stored 8/16-bit CPU copy
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TrainerContext(Protocol):
    """What an algorithm's hooks may use of the trainer: its services and state, nothing else.

    Services: :meth:`sample_epoch` (rollouts of the epoch's batches, each scored as it is decoded),
    :meth:`score_epoch` (rewards gathered, advantages set), :meth:`optimize_epoch` (the inner epochs of
    updates), :meth:`checkpoint_object` (state saved and resumed with the run), :meth:`count_samples` (samples an
    algorithm generated outside :meth:`sample_epoch`, counted in the run's ``samples``). State: the model adapter,
    the trainable denoiser without wrappers (``unwrapped``), the training reward, the prompt sampler and the
    training prompts, the accelerator and the run's counters (``state.epoch``, ``state.global_step``).
    """

    adapter: Any
    accelerator: Any
    unwrapped: torch.nn.Module
    reward_fn: Any
    sampler: Any
    train_set: Any  # the training prompts (genrl.data.PromptDataset): prompts and metadata by index
    state: Any

    def sample_epoch(self, epoch: int) -> list[RolloutBatch]: ...

    def score_epoch(self, batches: list[RolloutBatch]) -> dict[str, float]: ...

    def optimize_epoch(self, batches: list[RolloutBatch]) -> dict[str, float]: ...

    def checkpoint_object(self, name: str, obj: Any) -> None: ...

    def count_samples(self, n: int) -> None: ...


@dataclass
class LossContext:
    """What a loss may call: the adapter, the (possibly DDP-wrapped) trainable model and the reference."""

    adapter: Any
    model: torch.nn.Module
    reference: Any | None  # genrl.models.lora.ReferencePolicy when a KL term is used


class Algorithm(ABC):
    """Base class of registered post-training algorithms.

    Besides the abstract methods, hooks with do-nothing defaults let an algorithm act between
    the trainer's phases: :meth:`setup` once the model is prepared, :meth:`sampling_policy`
    around every rollout, :meth:`generator_update` before the update, :meth:`after_epoch` after the epoch's updates.
    """

    name: str = "algorithm"
    #: True when samples with ``keep == False`` contribute nothing to the loss (so all-masked batches can be skipped)
    masked_samples_carry_no_loss: bool = False
    #: True for an algorithm that backpropagates the reward into the generator (the trainer then refuses a
    #: training reward whose ``differentiable`` flag is off, naming it)
    needs_differentiable_reward: bool = False
    #: LoRA adapters the algorithm keeps besides the trained ``default`` one (DiffusionNFT's old policy): added by
    #: the trainer with the default's config and weights, frozen and inactive, before the model is prepared
    extra_lora_adapters: tuple[str, ...] = ()
    #: True for an algorithm whose loss calls the denoiser many times per backward, some of the calls recomputed
    #: inside the backward pass (reward backpropagation through checkpointed sampling steps), which DDP's
    #: once-per-backward bookkeeping cannot follow: the trainer then gives the loss the denoiser without the DDP
    #: wrapper and averages the gradients over the processes itself before each optimizer step
    many_forwards_per_backward: bool = False

    def needs_reference(self) -> bool:
        """Whether the loss uses the frozen reference policy (the trainer builds it only then): by default when
        the algorithm's config has a KL weight ``train.beta > 0``."""
        train = getattr(self, "train", None)
        return float(getattr(train, "beta", 0.0) or 0.0) > 0

    @abstractmethod
    def num_train_units(self) -> int:
        """(batch, step) units trained per sampling batch; one backward each, accumulated by the trainer."""

    def run_epoch(self, trainer: TrainerContext, epoch: int) -> dict[str, float]:
        """One epoch of the algorithm, returning its metrics. The default is the on-policy epoch of the GRPO
        family: sample (each batch scored as decoded), gather rewards and set advantages, let
        :meth:`generator_update` decide whether the generator learns this epoch, update, :meth:`after_epoch`.
        An algorithm with another epoch (reward backpropagation, off-policy replay) overrides this."""
        batches = trainer.sample_epoch(epoch)
        record = trainer.score_epoch(batches)
        update_generator, metrics = self.generator_update(trainer, batches)
        record.update(metrics)
        if update_generator:
            record.update(trainer.optimize_epoch(batches))
        record.update(self.after_epoch(trainer))
        return record

    def setup(self, trainer: TrainerContext) -> None:
        """Called once the trainer has prepared the model, before any resume."""

    def sampling_policy(self, trainer: TrainerContext):
        """Context manager active while the trainer samples rollouts (default: the trained policy)."""
        return contextlib.nullcontext()

    def after_sampling(self, trainer: TrainerContext, batch: RolloutBatch) -> None:
        """Called (without gradients, under :meth:`sampling_policy`) after each batch is sampled and decoded."""

    def advantage_inputs(self, batches: list[RolloutBatch]) -> torch.Tensor | None:
        """Per-sample tensors (this process's samples, in order) the trainer gathers across processes and
        passes to :meth:`compute_advantages` as ``extra``; None when the rewards are all it needs."""
        return None

    def generator_update(self, trainer: TrainerContext, batches: list[RolloutBatch]) -> tuple[bool, dict[str, float]]:
        """Called after rewards and advantages are set; returns whether the generator is updated this epoch
        (default: always) and metrics to log. Adv-GRPO trains its discriminator here instead on some epochs."""
        return True, {}

    def after_epoch(self, trainer: TrainerContext) -> dict[str, float]:
        """Called after the epoch's optimizer steps; returns metrics to log."""
        return {}

    @abstractmethod
    def rollout_window(self, num_steps: int, generator: torch.Generator) -> tuple[int, int]:
        """The ``[start, end)`` range of steps the rollout samples stochastically and records."""

    @abstractmethod
    def compute_advantages(self, rewards: torch.Tensor, group_ids: Sequence[Hashable]) -> Advantages:
        """Advantages of all gathered samples (identical on every process)."""

    @abstractmethod
    def train_positions(self, batch: RolloutBatch) -> list[int]:
        """Positions in ``batch.trajectory`` that are trained, in order."""

    @abstractmethod
    def loss(self, ctx: LossContext, batch: RolloutBatch, position: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one (batch, recorded step) unit and its diagnostics."""


_ALGORITHMS: Registry[Algorithm] = Registry("algorithm")


def gathered_reward_stats(accelerator, units: list[RolloutBatch]) -> dict[str, float]:
    """``reward/mean``, ``reward/std`` and ``reward/nonfinite`` of the units' rewards over every process, for an
    algorithm that scores inside its loss (reward backpropagation, Ctrl-U) instead of in ``score_epoch``."""
    rewards = accelerator.gather(torch.cat([u.rewards for u in units]))
    finite = rewards[torch.isfinite(rewards)]
    return {"reward/mean": finite.mean().item() if finite.numel() else float("nan"),
            "reward/std": finite.std().item() if finite.numel() > 1 else 0.0,
            "reward/nonfinite": float((~torch.isfinite(rewards)).sum())}


def register_algorithm(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator registering an algorithm under ``name``."""
    return _ALGORITHMS.register(name)


def build_algorithm(name: str, cfg: Any) -> Algorithm:
    """Instantiate the algorithm registered as ``name`` from an experiment config."""
    return _ALGORITHMS.build(name, cfg, hint=" (train.algorithm)")
