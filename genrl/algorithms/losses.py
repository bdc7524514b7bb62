"""Policy-gradient losses shared by the GRPO-family algorithms."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PolicyLossOutput:
    """The clipped surrogate loss and its diagnostics (detached floats)."""

    loss: torch.Tensor
    ratio_mean: float
    clipfrac: float
    approx_kl: float
    clipfrac_gt_one: float = 0.0  # share of ratios above 1 + eps
    clipfrac_lt_one: float = 0.0  # share of ratios below 1 - eps


def ppo_clip_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                  clip_range: float) -> PolicyLossOutput:
    """``mean_b max(-A r, -A clip(r, 1 - eps, 1 + eps))`` with ``r = exp(logp - logp_old)``.

    ``approx_kl = 0.5 mean((logp - logp_old)^2)`` and the clip fraction are logged as in Flow-GRPO.
    """
    delta = log_prob - old_log_prob.detach()
    ratio = torch.exp(delta)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        clipfrac = ((ratio - 1.0).abs() > clip_range).float().mean().item()
        approx_kl = 0.5 * (delta**2).mean().item()
        above = (ratio > 1.0 + clip_range).float().mean().item()
        below = (ratio < 1.0 - clip_range).float().mean().item()
    return PolicyLossOutput(loss, ratio.detach().mean().item(), clipfrac, approx_kl, above, below)


def step_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor, dt: torch.Tensor | float,
            convention: str = "code") -> torch.Tensor:
    """Per-sample KL between the policy's and the reference's step Gaussians (same std).

    ``std`` is the Gaussian's actual std (``std_t sqrt(-dt)``); ``dt`` broadcasts like ``std``. ``convention="paper"`` gives the
    exact ``mean_dims (mu - mu_ref)^2 / (2 std^2)``; ``"code"`` reproduces the released Flow-GRPO code,
    which divides by ``2 std_t^2`` and so omits the ``dt`` factor (a smaller KL by ``-dt``).
    """
    sq = (mean - ref_mean) ** 2
    var = std**2
    if convention == "code":
        var = var / -torch.as_tensor(dt, dtype=var.dtype, device=var.device)
    elif convention != "paper":
        raise ValueError(f"KL convention must be 'code' or 'paper', got {convention!r}")
    return (sq / (2 * var)).mean(dim=tuple(range(1, sq.ndim)))
