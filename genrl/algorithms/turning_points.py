"""TP-GRPO's step-level rewards: incremental rewards, turning points, aggregated rewards and balancing.

Pure tensor rules (see ``reference/tp-grpo.md`` §3). ``R`` holds, per trajectory, the rewards of the
ODE completions after 0..W stochastic steps: ``R[:, 0]`` is the pure ODE sample from the rollout's
own initial noise and ``R[:, W]`` the final rollout image's reward.
"""

from __future__ import annotations

import torch


def incremental_rewards(R: torch.Tensor) -> torch.Tensor:
    """``d_k = R_k - R_{k-1}`` for k = 1..W, shape ``(B, W)``; they telescope to ``R_W - R_0``."""
    return R[:, 1:] - R[:, :-1]


def aggregated_rewards(R: torch.Tensor) -> torch.Tensor:
    """``G_k = R_W - R_{k-1}`` (the suffix sum of ``d`` from k), shape ``(B, W)``."""
    return R[:, -1:] - R[:, :-1]


def turning_points(R: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, W)`` mask of turning points, with the released launch scripts' rules.

    k = 1 (the initial point): ``sign(d_1) sign(R_W - R_1) > 0``. k >= 2: the previous step moved
    against the overall trend ``Delta = R_W - R_0`` (``sign(d_{k-1}) sign(Delta) < 0``), this step moves
    with it (``sign(d_k) sign(Delta) > 0``) and the rest of the trajectory keeps that direction
    (``sign(d_k) sign(R_W - R_k) > 0``). The last step is never one (``R_W - R_W = 0``).
    """
    d = incremental_rewards(R)
    delta = (R[:, -1] - R[:, 0]).unsqueeze(1)
    rest = R[:, -1:] - R[:, 1:]  # R_W - R_k for k = 1..W
    with_trend = torch.sign(d) * torch.sign(delta)
    keeps_going = torch.sign(d) * torch.sign(rest) > 0
    mask = torch.zeros_like(d, dtype=torch.bool)
    mask[:, 0] = keeps_going[:, 0]
    if d.shape[1] > 1:
        mask[:, 1:] = (with_trend[:, :-1] < 0) & (with_trend[:, 1:] > 0) & keeps_going[:, 1:]
    return mask


def balance_turning_points(mask: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Keep equally many turning points of positive and negative trend within a batch.

    When both signs of ``Delta`` occur among the turning points, keep ``min(n+, n-)`` of each sign,
    those with the largest ``|G_k|``, ties broken by trajectory then step order (the released code
    ranks by ``|Delta|``, equal for all steps of a trajectory, and breaks ties arbitrarily). When only
    one sign occurs, every turning point is kept.
    """
    G = aggregated_rewards(R)
    delta = (R[:, -1] - R[:, 0]).unsqueeze(1).expand_as(G)
    pos, neg = mask & (delta > 0), mask & (delta < 0)
    n = min(int(pos.sum()), int(neg.sum()))
    if n == 0:
        return mask.clone()
    kept = torch.zeros_like(mask)
    for side in (pos, neg):
        idx = side.flatten().nonzero().flatten()
        # stable sort by -|G|: equal magnitudes keep their (trajectory, step) order
        order = torch.sort(-G.flatten()[idx].abs(), stable=True).indices
        kept.view(-1)[idx[order[:n]]] = True
    return kept


def step_rewards(R: torch.Tensor, balance: bool = True, bonus: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step rewards ``(B, W)``: ``bonus * G_k`` at kept turning points (replacing ``d_k``), ``d_k`` elsewhere.

    Returns the rewards and the mask of kept turning points.
    """
    mask = turning_points(R)
    if balance:
        mask = balance_turning_points(mask, R)
    return torch.where(mask, bonus * aggregated_rewards(R), incremental_rewards(R)), mask
