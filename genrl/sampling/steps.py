"""Single denoising steps of flow-matching samplers as Gaussian policies (pure tensor functions).

Convention (as Flow-GRPO's released code): ``x_t = (1 - t) x0 + t eps``, the model predicts the
velocity ``v`` (CFG already applied), ``sigma`` is the current and ``sigma_next`` the next,
smaller noise level, ``dt = sigma_next - sigma < 0``. Arithmetic runs in float32. Log-probs are
*means* over all non-batch dimensions, which is why Flow-GRPO's clip ranges are tiny (1e-4).

Each step returns the next latent, the Gaussian's mean and std and the log-prob of the next
latent; pass ``prev_sample`` to score a stored transition instead of drawing a new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class StepOutput:
    """Result of one stochastic step: ``prev_sample ~ N(mean, std^2)`` with per-sample ``log_prob`` (shape ``(B,)``)."""

    prev_sample: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor  # broadcastable to the latent; per unit of the step, i.e. the Gaussian's actual std
    log_prob: torch.Tensor


def _per_sample(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar or ``(B,)`` schedule value as float32 broadcastable against ``like``."""
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else t


def _mean_over_dims(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


def _draw(mean: torch.Tensor, std: torch.Tensor, prev_sample: torch.Tensor | None,
          generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    if prev_sample is not None:
        return prev_sample.to(torch.float32)
    if isinstance(generator, list):
        noise = torch.stack([torch.randn(mean.shape[1:], generator=g, device=mean.device) for g in generator])
    else:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
    return mean + std * noise


def sde_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next, noise_level: float, *,
             sigma_max: float | torch.Tensor | None = None, prev_sample: torch.Tensor | None = None,
             generator=None) -> StepOutput:
    """Flow-GRPO's SDE step (``sde_type="sde"``), the Euler-Maruyama step of the reverse SDE.

    ``std_t = a * sqrt(sigma / (1 - sigma))`` (at ``sigma == 1`` the denominator uses ``sigma_max``,
    the schedule's second value, as the reference does), mean
    ``x (1 + std_t^2 dt / (2 sigma)) + v (1 + std_t^2 (1 - sigma) / (2 sigma)) dt`` and
    Gaussian std ``std_t sqrt(-dt)``; the log-prob keeps every constant. With ``noise_level = 0``
    the step is exactly the Euler step ``x + v dt``.
    """
    x = x.to(torch.float32)
    s = _per_sample(sigma, x)
    denom_sigma = s if sigma_max is None else torch.where(s == 1, _per_sample(sigma_max, x), s)
    return _reverse_sde_step(x, v, s, _per_sample(sigma_next, x), torch.sqrt(s / (1 - denom_sigma)) * noise_level,
                             prev_sample, generator)


def wan_sde_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next, noise_level: float = 1.0, *,
                 sigma_max: float | torch.Tensor, sigma_min: float | torch.Tensor = 0.0,
                 prev_sample: torch.Tensor | None = None, generator=None) -> StepOutput:
    """Flow-GRPO's Wan2.1 SDE step: the same Euler-Maruyama mean as :func:`sde_step`, with a diffusion
    coefficient linear in sigma, ``std_t = a (sigma_min + (sigma_max - sigma_min) sigma)``, where
    ``sigma_max`` is the schedule's second value and ``sigma_min`` its last (0), as the reference's
    ``wan_pipeline_with_logprob`` has it (``a = noise_level``; the reference has no such factor, i.e. 1).
    """
    x = x.to(torch.float32)
    s = _per_sample(sigma, x)
    lo, hi = _per_sample(sigma_min, x), _per_sample(sigma_max, x)
    return _reverse_sde_step(x, v, s, _per_sample(sigma_next, x), (lo + (hi - lo) * s) * noise_level,
                             prev_sample, generator)


def _reverse_sde_step(x: torch.Tensor, v: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor, std_t: torch.Tensor,
                      prev_sample: torch.Tensor | None, generator) -> StepOutput:
    """Euler-Maruyama transition of the reverse SDE with diffusion coefficient ``std_t`` (float32 inputs)."""
    v = v.to(torch.float32)
    dt = s_next - s
    mean = x * (1 + std_t**2 / (2 * s) * dt) + v * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
    std = std_t * torch.sqrt(-dt)
    nxt = _draw(mean, std, prev_sample, generator)
    log_prob = (-((nxt.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - math.log(math.sqrt(2 * math.pi)))
    return StepOutput(nxt, mean, std, _mean_over_dims(log_prob.expand_as(mean)))


def cps_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next, noise_level: float, *,
             prev_sample: torch.Tensor | None = None, generator=None) -> StepOutput:
    """Coefficients-Preserving Sampling step (``sde_type="cps"``).

    With ``x0 = x - sigma v`` and ``x1 = x + (1 - sigma) v``, noise std ``s = sigma_next sin(a pi / 2)``
    and mean ``(1 - sigma_next) x0 + sqrt(sigma_next^2 - s^2) x1``, so the total noise
    coefficient stays ``sigma_next``. As in the reference, the log-prob drops every constant
    including ``1 / (2 s^2)``: ``-mean((x' - mean)^2)``.
    """
    x, v = x.to(torch.float32), v.to(torch.float32)
    s, s_next = _per_sample(sigma, x), _per_sample(sigma_next, x)
    x0, x1 = x - s * v, x + (1 - s) * v
    std = s_next * math.sin(noise_level * math.pi / 2)
    mean = (1 - s_next) * x0 + torch.sqrt(s_next**2 - std**2) * x1
    nxt = _draw(mean, std, prev_sample, generator)
    return StepOutput(nxt, mean, std, _mean_over_dims(-((nxt.detach() - mean) ** 2)))


def ddim_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next, noise_level: float = 1.0, *,
              prev_sample: torch.Tensor | None = None, generator=None) -> StepOutput:
    """The DDIM-eta step (``eta = noise_level``), first order, written in the flow-matching coordinates.

    With ``x0 = x - sigma v``, ``eps = x + (1 - sigma) v`` and ``r = sigma_next (1 - sigma) / (sigma (1 - sigma_next))``
    (the ratio of the two noise levels in VE units, ``sigma / (1 - sigma)``), the noise std is
    ``s = eta sigma_next sqrt(1 - r^2)`` and the mean ``(1 - sigma_next) x0 + sqrt(sigma_next^2 - s^2) eps``, so
    the total noise coefficient stays ``sigma_next`` (as in CPS). DDIM does not depend on how the Gaussian
    path is parameterised: ``eta = 1`` is the first-order update of Stable Audio's
    ``CosineDPMSolverMultistepScheduler`` (SDE-DPM-Solver++ in VE units) and of DDPM, ``eta = 0`` the
    deterministic DDIM step, i.e. the Euler step ``x + v dt``. The log-prob is the Gaussian's with every
    constant; a step with no noise (``sigma_next = 0`` or ``eta = 0``) is deterministic and gets the
    reference's surrogate ``-mean((x' - mean)^2)`` instead.
    """
    x, v = x.to(torch.float32), v.to(torch.float32)
    s, s_next = _per_sample(sigma, x), _per_sample(sigma_next, x)
    x0, eps = x - s * v, x + (1 - s) * v
    ratio = s_next * (1 - s) / (s * (1 - s_next)).clamp(min=1e-12)  # 0 at sigma = 1 (VE sigma infinite)
    std = noise_level * s_next * torch.sqrt((1 - ratio**2).clamp(min=0))
    mean = (1 - s_next) * x0 + torch.sqrt((s_next**2 - std**2).clamp(min=0)) * eps
    nxt = _draw(mean, std, prev_sample, generator)
    residual = (nxt.detach() - mean) ** 2
    noisy = std > 0
    log_prob = torch.where(noisy, -residual / (2 * std.clamp(min=1e-20) ** 2) - torch.log(std.clamp(min=1e-20))
                           - math.log(math.sqrt(2 * math.pi)), -residual)
    return StepOutput(nxt, mean, std, _mean_over_dims(log_prob.expand_as(mean)))


def ode_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next, *, prev_sample: torch.Tensor | None = None) -> StepOutput:
    """The deterministic Euler step ``x + v dt`` (diffusers' FlowMatchEulerDiscreteScheduler), with the
    reference's surrogate log-prob ``-mean((x' - mean)^2)``."""
    x, v = x.to(torch.float32), v.to(torch.float32)
    dt = _per_sample(sigma_next, x) - _per_sample(sigma, x)
    mean = x + dt * v
    nxt = mean if prev_sample is None else prev_sample.to(torch.float32)
    return StepOutput(nxt, mean, torch.zeros_like(dt), _mean_over_dims(-((nxt.detach() - mean) ** 2)))


def dpm2_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next, *, prev_x0: torch.Tensor | None = None,
              prev_sigma=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic DPM-Solver++(2M) step for flow matching (``alpha = 1 - sigma``), in data-prediction form.

    With ``lambda = log(alpha / sigma)``, ``h = lambda' - lambda`` and ``x0 = x - sigma v``:
    ``x' = (sigma'/sigma) x - alpha' (exp(-h) - 1) D``, where ``D = x0`` on the first step (first order,
    i.e. DDIM) and ``D = (1 + 1/(2 r)) x0 - 1/(2 r) x0_prev`` with ``r = h_prev / h`` afterwards.
    The final step to ``sigma' = 0`` returns ``x0``. Returns ``(x', x0)``; pass ``x0`` and ``sigma``
    as ``prev_x0`` / ``prev_sigma`` to the next step. No extra model evaluations.
    """
    x, v = x.to(torch.float32), v.to(torch.float32)
    s, s_next = _per_sample(sigma, x), _per_sample(sigma_next, x)
    x0 = x - s * v
    if bool((s_next == 0).all()):
        return x0, x0
    lam = lambda sig: torch.log((1 - sig).clamp(min=1e-12)) - torch.log(sig)
    h = lam(s_next) - lam(s)
    d = x0
    if prev_x0 is not None and bool((s < 1).all()):
        h_prev = lam(s) - lam(_per_sample(prev_sigma, x))
        r = h_prev / h
        d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev_x0.to(torch.float32)
    x_next = (s_next / s) * x - (1 - s_next) * torch.expm1(-h) * d
    return x_next, x0


STEP_TYPES = ("sde", "wan_sde", "cps", "ddim", "ode")


def flow_step(kind: str, x: torch.Tensor, v: torch.Tensor, sigma, sigma_next, noise_level: float, *,
              sigma_max: float | torch.Tensor | None = None, sigma_min: float | torch.Tensor = 0.0,
              **kwargs) -> StepOutput:
    """Dispatch to :func:`sde_step`, :func:`wan_sde_step`, :func:`cps_step`, :func:`ddim_step` or
    :func:`ode_step` by name.

    ``sigma_max`` / ``sigma_min`` (the schedule's second and last values) are passed to the steps that
    use them; the others ignore them.
    """
    if kind == "sde":
        return sde_step(x, v, sigma, sigma_next, noise_level, sigma_max=sigma_max, **kwargs)
    if kind == "wan_sde":
        if sigma_max is None:
            raise ValueError("the wan_sde step needs sigma_max (the schedule's second value)")
        return wan_sde_step(x, v, sigma, sigma_next, noise_level, sigma_max=sigma_max, sigma_min=sigma_min, **kwargs)
    if kind == "cps":
        return cps_step(x, v, sigma, sigma_next, noise_level, **kwargs)
    if kind == "ddim":
        return ddim_step(x, v, sigma, sigma_next, noise_level, **kwargs)
    if kind == "ode":
        kwargs.pop("generator", None)
        return ode_step(x, v, sigma, sigma_next, **kwargs)
    raise ValueError(f"unknown step type {kind!r}; expected one of {STEP_TYPES}")
