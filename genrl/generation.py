"""Generation, written once: conditions from the prompts' metadata -> encode -> initial noise -> rollout -> decode.

The trainer's training rollouts, its evaluation and the benchmarks all sample through
:func:`generate`; an algorithm that completes a recorded state (TP-GRPO) uses :func:`complete`.
Any of them can carry an editing family's conditions: they are read from the prompts' JSONL fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint

from genrl.models.base import ModelAdapter
from genrl.sampling.rollout import Trajectory, rollout
from rewards.media import Media


class MissingCondition(ValueError):
    """A prompt lacks a field its model family conditions on (``index`` in the batch, ``key``)."""

    def __init__(self, index: int, key: str, family: str) -> None:
        super().__init__(f"prompt {index} has no {key!r} field, which model family {family!r} conditions on")
        self.index, self.key, self.family = index, key, family


@dataclass
class Generation:
    """One generated batch: the conditioning it was sampled under, its trajectory and decoded media."""

    cond: Any
    trajectory: Trajectory
    media: Media  # float32 on the device, the adapter's kind and rate


def conditions_from_metadata(adapter: ModelAdapter, metadata: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """Each prompt's condition (the adapter's ``condition_keys`` read from its JSONL fields), or None for a
    text-only family; a missing field raises :class:`MissingCondition`."""
    if not adapter.condition_keys:
        return None
    conditions = []
    for i, fields in enumerate(metadata):
        missing = [key for key in adapter.condition_keys if key not in (fields or {})]
        if missing:
            raise MissingCondition(i, missing[0], adapter.family)
        conditions.append({key: fields[key] for key in adapter.condition_keys})
    return conditions


def generate(adapter: ModelAdapter, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]], *,
             sigmas: torch.Tensor, noise_generators: Sequence[torch.Generator], model: torch.nn.Module | None = None,
             guidance_scale: float | None = None, step_type: str = "sde", noise_level: float = 0.0,
             window: tuple[int, int] = (0, 0), step_generators: Sequence[torch.Generator] | None = None,
             ode_solver: str = "euler", encode: Callable[..., Any] | None = None, grad_from: int | None = None,
             checkpoint: bool = True,
             on_step: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> Generation:
    """Sample one batch: stochastic ``step_type`` steps at ``noise_level`` inside ``window``, the deterministic
    ``ode_solver`` outside it (the defaults are the deterministic sampler). ``model`` replaces the denoiser
    (a wrapped or EMA one); ``guidance_scale`` None is the adapter's; ``encode`` replaces ``adapter.encode``
    (a :class:`genrl.models.embedding_cache.PromptEmbeddingCache`'s).

    With ``grad_from`` (reward backpropagation) the steps from that index on and the decoder keep gradients, each
    recomputed in the backward pass when ``checkpoint`` (see :func:`genrl.sampling.rollout.rollout`); the media
    can then be differentiated with respect to the model. ``on_step(x, sigma)`` sees the state entering every
    model evaluation (also the recomputations of a checkpointed backward)."""
    encode = encode or adapter.encode
    cond = encode(prompts, guidance_scale=guidance_scale, conditions=conditions_from_metadata(adapter, metadata))
    x = adapter.initial_noise(noise_generators)

    def velocity(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if on_step is not None:
            on_step(z, s)
        return adapter.velocity(z, s, cond, guidance_scale=guidance_scale, model=model)

    traj = rollout(velocity, x, sigmas, step_type=step_type, noise_level=noise_level, window=window,
                   generators=step_generators, ode_solver=ode_solver, grad_from=grad_from, checkpoint=checkpoint)
    if grad_from is not None and checkpoint:  # the decoder's activations are recomputed in the backward pass too
        decoded = torch.utils.checkpoint.checkpoint(adapter.decode, traj.final, use_reentrant=False)
    else:
        decoded = adapter.decode(traj.final)
    return Generation(cond, traj, adapter.as_media(decoded.float()))


def complete(adapter: ModelAdapter, cond: Any, x: torch.Tensor, sigmas: torch.Tensor,
             model: torch.nn.Module | None = None) -> torch.Tensor:
    """Decoded media of deterministic completions of the states ``x`` at ``sigmas[0]`` down ``sigmas``."""
    done = rollout(lambda z, s: adapter.velocity(z, s, cond, model=model), x, sigmas, window=(0, 0))
    return adapter.decode(done.final).float()
