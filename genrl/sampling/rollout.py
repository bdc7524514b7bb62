"""Rollouts: run a velocity model over a sigma schedule, stochastic inside a window, ODE outside."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from .steps import dpm2_step, flow_step

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RolloutPlan:
    """How a rollout sampled: the stochastic step, its noise level and window, the solver outside it.
    A loss re-scores a transition with the plan it was drawn under, not with the current config."""

    step_type: str
    noise_level: float
    window: tuple[int, int]
    ode_solver: str


@dataclass
class Trajectory:
    """What a rollout records for training.

    For each stochastic step ``j`` in ``steps``: the state before it (``states[:, k]``), the state
    after it (``next_states[:, k]``) and its log-prob under the sampling policy (``log_probs[:, k]``).
    ``initial`` is the starting noise x_T, ``final`` the last latent, ``plan`` how it was sampled.
    """

    steps: list[int]
    states: torch.Tensor  # (B, K, *latent)
    next_states: torch.Tensor  # (B, K, *latent)
    log_probs: torch.Tensor  # (B, K)
    final: torch.Tensor
    initial: torch.Tensor
    plan: RolloutPlan

    @classmethod
    def of_latents(cls, x0: torch.Tensor, solver: str = "euler") -> Trajectory:
        """A trajectory holding only final latents and no stochastic step: training data for losses that read
        ``final`` alone (DRAGON's demonstrations, Ctrl-U's data images)."""
        empty = x0.new_zeros((x0.shape[0], 0, *x0.shape[1:]))
        return cls([], empty, empty, x0.new_zeros((x0.shape[0], 0)), x0, x0, RolloutPlan("ode", 0.0, (0, 0), solver))


def sde_window(num_steps: int, window_size: int, window_range: tuple[int, int] | None,
               generator: torch.Generator | None = None) -> tuple[int, int]:
    """Flow-GRPO-Fast's window: ``start ~ U{r0 .. r1 - w}``, window ``[start, start + w)``.

    ``window_size = 0`` means every step but the last is stochastic (the base Flow-GRPO sampler
    records all steps; the trainer drops the last by its timestep fraction).
    """
    if window_size == 0:
        return 0, num_steps
    r0, r1 = window_range or (0, num_steps)
    if not 0 <= r0 <= r1 - window_size or r1 > num_steps:
        raise ValueError(f"window of size {window_size} does not fit range {(r0, r1)} of {num_steps} steps")
    start = int(torch.randint(r0, r1 - window_size + 1, (1,), generator=generator))
    return start, start + window_size


def rollout(velocity: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor, *, step_type: str = "sde",
            noise_level: float = 0.7, window: tuple[int, int] | None = None,
            generators: Sequence[torch.Generator] | None = None, ode_solver: str = "euler",
            grad_from: int | None = None, checkpoint: bool = True) -> Trajectory:
    """Sample from ``x`` (noise at ``sigmas[0]``) down the schedule.

    Steps ``j`` in ``[window[0], window[1])`` use ``step_type`` (``"sde"``, ``"wan_sde"``, ``"cps"`` or ``"ddim"``) at
    ``noise_level`` and are recorded; the others are deterministic Euler steps. ``generators``
    (one per sample) make the injected noise reproducible per sample, whatever the batch.
    ``ode_solver`` is the deterministic solver outside the window: ``"euler"`` (the pipeline's own)
    or ``"dpm2"`` (DPM-Solver++(2M), second order at no extra model evaluations).

    Without ``grad_from`` the rollout records no autograd graph. With it, steps ``j >= grad_from`` (the
    last ``num_steps - grad_from``, DRaFT-K's K) keep gradients, so ``final`` can be differentiated by a
    reward with respect to the model (stochastic steps by their reparameterised noise); the state entering
    step ``grad_from`` is detached, and ``checkpoint`` recomputes each step's activations in the backward
    pass instead of storing them.
    """
    if ode_solver not in ("euler", "dpm2"):
        raise ValueError(f"unknown ode_solver {ode_solver!r}; expected 'euler' or 'dpm2'")
    num_steps = len(sigmas) - 1
    if grad_from is not None and not 0 <= grad_from < num_steps:
        raise ValueError(f"grad_from={grad_from} must be a step index in [0, {num_steps})")
    start_grad = num_steps if grad_from is None else grad_from
    with torch.no_grad():
        return _run(velocity, x, sigmas, step_type, noise_level, window, generators, ode_solver, start_grad,
                    checkpoint)


def _run(velocity: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor, step_type: str, noise_level: float,
         window: tuple[int, int] | None, generators: Sequence[torch.Generator] | None, ode_solver: str,
         start_grad: int, checkpoint: bool) -> Trajectory:
    num_steps = len(sigmas) - 1
    lo, hi = window if window is not None else (0, num_steps)
    plan, initial = RolloutPlan(step_type, float(noise_level), (int(lo), int(hi)), ode_solver), x
    steps, states, nexts, logps = [], [], [], []
    prev_x0 = prev_sigma = None
    for j in range(num_steps):
        sigma, sigma_next = sigmas[j], sigmas[j + 1]
        if j == start_grad:  # from here on the steps are differentiated
            torch.set_grad_enabled(True)
            x = x.detach()
        if j >= start_grad and checkpoint:
            v = torch.utils.checkpoint.checkpoint(velocity, x, sigma, use_reentrant=False)
        else:
            v = velocity(x, sigma)
        if lo <= j < hi:
            out = flow_step(step_type, x, v, sigma, sigma_next, noise_level, sigma_max=sigmas[1],
                            sigma_min=sigmas[-1], generator=list(generators) if generators is not None else None)
            steps.append(j)
            states.append(x)
            nexts.append(out.prev_sample)
            logps.append(out.log_prob)
            prev_x0 = None  # a stochastic step breaks the multistep history
        elif ode_solver == "dpm2":
            nxt, x0 = dpm2_step(x, v, sigma, sigma_next, prev_x0=prev_x0, prev_sigma=prev_sigma)
            prev_x0, prev_sigma = x0, sigma
            x = nxt.to(x.dtype)
            continue
        else:
            out = flow_step("ode", x, v, sigma, sigma_next, 0.0)
        x = out.prev_sample.to(x.dtype)
    if steps:
        stacked = (torch.stack(states, 1), torch.stack(nexts, 1), torch.stack(logps, 1))
    else:
        empty = x.new_zeros((x.shape[0], 0, *x.shape[1:]))
        stacked = (empty, empty.clone(), x.new_zeros((x.shape[0], 0)))
    return Trajectory(steps, *stacked, final=x, initial=initial, plan=plan)
