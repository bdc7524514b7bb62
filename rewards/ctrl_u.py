"""Ctrl-U uncertainty-aware reward losses (Zhang et al., ICLR 2025).

The uncertainty of a reward comes from two evaluations that should agree: the reward model's
outputs on one-step x0 predictions from the *same* x0, noise and condition at adjacent
timesteps t and t + 1. Where they disagree the reward is unreliable, so its loss is
down-weighted by ``exp(-U)``; the ``+ reg * U`` term keeps U from growing without bound. U is not
detached: gradients flow through both terms (the heteroscedastic ``exp(-U) l + U`` form).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def regression_uncertainty(primary: torch.Tensor, auxiliary: torch.Tensor) -> torch.Tensor:
    """``U = |c1 - c2|`` element-wise (depth, edges, line art; any scalar or dense reward output)."""
    return (primary - auxiliary).abs()


def classification_uncertainty(primary_logits: torch.Tensor, auxiliary_logits: torch.Tensor, scale: float = 1.0,
                               dim: int = 1) -> torch.Tensor:
    """``U = scale * KL(p2 || p1) = scale * sum_k p2_k (log p2_k - log p1_k)`` over the class dimension."""
    log_p1 = F.log_softmax(primary_logits, dim=dim)
    log_p2 = F.log_softmax(auxiliary_logits, dim=dim)
    return scale * (log_p2.exp() * (log_p2 - log_p1)).sum(dim)


def uncertainty_weighted_loss(loss: torch.Tensor, uncertainty: torch.Tensor, timesteps: torch.Tensor | None = None,
                              t_max: int | None = None, reg: float = 1.0,
                              valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ctrl-U's reward loss and its regulariser.

    ``loss`` and ``uncertainty`` are per element with the batch first (e.g. ``(B, H, W)``);
    ``valid`` masks elements (segmentation ignores label 255). Rows with ``timesteps > t_max``
    contribute nothing. Returns ``(sum_b m_b mean(exp(-U) l) / sum_b m_b, reg * masked mean(U))``.
    """
    batch = loss.shape[0]
    mask = torch.ones(batch, dtype=loss.dtype, device=loss.device)
    if t_max is not None:
        if timesteps is None:
            raise ValueError("t_max needs timesteps")
        mask = (timesteps <= t_max).to(loss.dtype)
    valid = torch.ones_like(loss) if valid is None else valid.to(loss.dtype)
    dims = tuple(range(1, loss.ndim))
    count = valid.sum(dims).clamp(min=1) if dims else valid
    weighted = (torch.exp(-uncertainty) * loss * valid).sum(dims) / count if dims else torch.exp(-uncertainty) * loss
    per_row_u = (uncertainty * valid).sum(dims) / count if dims else uncertainty
    denom = mask.sum().clamp(min=1)
    return (mask * weighted).sum() / denom, reg * (mask * per_row_u).sum() / denom
