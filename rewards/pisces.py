"""PISCES's optimal-transport pieces (``shared/reference/pisces.md``): the neural OT map behind the distributional
quality reward R_Q, and the token-level unbalanced Sinkhorn plan fused into cross-attention behind the semantic
reward R_S. Encoder-agnostic: they take embeddings, attention maps and token geometry from any video-text model.

- **R_Q**: a map ``T`` (MLP, ReLU then LayerNorm after each hidden layer) carries text embeddings into the video
  embedding distribution; it is trained against a potential ``f`` by the min-max objective
  ``L_T = mse_w mean((T(x) - x)^2) - mean f(T(x))``, ``L_f = mean f(sg T(x)) - mean f(y)`` with 10 map steps per
  potential step; ``R_Q = mean_b cos(v_b, normalize(T(normalize(t_b))))``, gradients through the video only.
- **R_S**: the cost between text tokens (queries) and spatio-temporal video tokens (keys)
  ``C = clamp(1 - cos(y_i, x_j), 0, 2) + gamma |tau_i - t_j| / max(F, 1) + eta ||pi_i - s_j|| / sqrt 2``
  (tau, pi: the attention-expected frame and position of query i), min-max normalised to [0, 1] (NaN -> 1); the
  log-domain unbalanced Sinkhorn plan (eps 0.05, m 0.9, 200 iterations, exponent ``k = rho / (rho + eps) = m``),
  rows normalised, detached; fused into the lexical rows' attention as ``softmax(log A + log P)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the released values
GAMMA = ETA = 0.2
EPSILON, MASS, ITERATIONS, TOLERANCE = 0.05, 0.9, 200, 1e-3
MAP_STEPS_PER_POTENTIAL_STEP = 10
CLAMP = 1e-6


def _trunk(dim: int, hidden: int) -> list[nn.Module]:
    return [nn.Linear(dim, hidden), nn.ReLU(), nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.LayerNorm(hidden)]


class OTMap(nn.Sequential):
    """``T``: ``dim -> hidden -> hidden -> dim`` (512 -> 1024 -> 1024 -> 512 in the release)."""

    def __init__(self, dim: int = 512, hidden: int = 1024) -> None:
        super().__init__(*_trunk(dim, hidden), nn.Linear(hidden, dim))


class OTPotential(nn.Sequential):
    """``f``: the same trunk, one output per sample."""

    def __init__(self, dim: int = 512, hidden: int = 1024) -> None:
        super().__init__(*_trunk(dim, hidden), nn.Linear(hidden, 1))


def map_loss(T: nn.Module, f: nn.Module, x: torch.Tensor, mse_weight: float = 1.0) -> torch.Tensor:
    """``L_T = mse_w mean((T(x) - x)^2) - mean f(T(x))`` (minimised over T)."""
    tx = T(x)
    return mse_weight * (tx - x).pow(2).mean() - f(tx).mean()


def potential_loss(T: nn.Module, f: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_f = mean f(sg T(x)) - mean f(y)`` (minimised over f)."""
    with torch.no_grad():
        tx = T(x)
    return f(tx).mean() - f(y).mean()


def ot_map_round(T: nn.Module, f: nn.Module, opt_T: torch.optim.Optimizer, opt_f: torch.optim.Optimizer,
                 x_batches, y: torch.Tensor, mse_weight: float = 1.0, max_grad_norm: float = 1.0) -> dict[str, float]:
    """One round of the min-max training: a map step on each of ``x_batches`` (10 in the release), then one
    potential step on the last of them against video embeddings ``y``."""
    x = None
    for x in x_batches:
        opt_T.zero_grad(set_to_none=True)
        loss_T = map_loss(T, f, x, mse_weight)
        loss_T.backward()
        torch.nn.utils.clip_grad_norm_(T.parameters(), max_grad_norm)
        opt_T.step()
    if x is None:
        raise ValueError("ot_map_round needs at least one batch of text embeddings")
    opt_f.zero_grad(set_to_none=True)
    loss_f = potential_loss(T, f, x, y)
    loss_f.backward()
    torch.nn.utils.clip_grad_norm_(f.parameters(), max_grad_norm)
    opt_f.step()
    return {"map_loss": loss_T.item(), "potential_loss": loss_f.item()}


def mutual_knn(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """Share of mutual k-nearest neighbours between two sets of paired rows (the map's selection metric)."""
    if a.shape[0] != b.shape[0] or not 0 < k < a.shape[0]:
        raise ValueError(f"mutual_knn needs paired sets of more than k={k} rows; got {a.shape[0]} and {b.shape[0]}")
    def knn(z):
        d = torch.cdist(z, z)
        d.fill_diagonal_(float("inf"))
        return d.topk(k, largest=False).indices
    na, nb = knn(a), knn(b)
    overlap = [len(set(na[i].tolist()) & set(nb[i].tolist())) for i in range(a.shape[0])]
    return sum(overlap) / (k * a.shape[0])


def distance_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rho between the pairwise distances within ``a`` and within ``b`` (rows paired)."""
    from scipy.stats import spearmanr

    iu = torch.triu_indices(a.shape[0], a.shape[0], 1)
    da, db = torch.cdist(a, a)[iu[0], iu[1]], torch.cdist(b, b)[iu[0], iu[1]]
    return float(spearmanr(da.double().numpy(), db.double().numpy()).statistic)


def quality_reward(video: torch.Tensor, text: torch.Tensor, T: nn.Module) -> torch.Tensor:
    """Per-sample R_Q: ``cos(v, normalize(T(normalize(t))))``; the text side (and T) carry no gradient."""
    with torch.no_grad():
        target = F.normalize(T(F.normalize(text.float(), dim=-1)), dim=-1)
    return (F.normalize(video.float(), dim=-1) * target).sum(-1)


def video_token_geometry(num_frames: int, grid: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame index ``(1 + F g^2,)`` and position ``(1 + F g^2, 2)`` of ``[CLS] + F x g x g`` patch tokens: the CLS
    token at frame -1 and (-1, -1), patches on a linspace over [0, 1]^2, frame-major."""
    coords = torch.linspace(0, 1, grid)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    positions = torch.stack([xx.flatten(), yy.flatten()], -1).repeat(num_frames, 1)
    frames = torch.arange(num_frames).repeat_interleave(grid * grid).float()
    return (torch.cat([torch.tensor([-1.0]), frames]),
            torch.cat([torch.tensor([[-1.0, -1.0]]), positions]))


def token_cost(queries: torch.Tensor, keys: torch.Tensor, attention: torch.Tensor, frames: torch.Tensor,
               positions: torch.Tensor, num_frames: int, gamma: float = GAMMA, eta: float = ETA) -> torch.Tensor:
    """The ``(N, M)`` cost between ``N`` text queries and ``M`` video keys, min-max normalised to [0, 1] (NaN -> 1).

    ``attention`` ``(N, M)`` is renormalised over its rows; ``frames`` ``(M,)`` and ``positions`` ``(M, 2)`` are the
    keys' geometry (:func:`video_token_geometry`)."""
    a = attention.float()
    a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
    cos = F.cosine_similarity(queries.float()[:, None], keys.float()[None], dim=-1)
    tau = a @ frames.float()  # expected frame of each query
    pi = a @ positions.float()  # expected position
    cost = ((1 - cos).clamp(0, 2) + gamma * (tau[:, None] - frames.float()[None]).abs() / max(num_frames, 1)
            + eta * (pi[:, None] - positions.float()[None]).norm(dim=-1) / math.sqrt(2))
    lo, hi = cost.min(), cost.max()
    cost = (cost - lo) / (hi - lo) if hi > lo else torch.zeros_like(cost)
    return torch.nan_to_num(cost, nan=1.0)


def sinkhorn_exponent(epsilon: float = EPSILON, mass: float = MASS) -> float:
    """``k = rho / (rho + eps)`` with ``rho = eps m / (1 - m)``; it equals ``m`` (``m = 1``: balanced, ``k = 1``)."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    if mass == 1:
        return 1.0
    rho = epsilon * mass / (1 - mass)
    return rho / (rho + epsilon)


@torch.no_grad()
def unbalanced_sinkhorn(cost: torch.Tensor, epsilon: float = EPSILON, mass: float = MASS,
                        iterations: int = ITERATIONS, tolerance: float = TOLERANCE,
                        normalize_rows: bool = True) -> torch.Tensor:
    """The log-domain unbalanced Sinkhorn plan of an ``(N, M)`` cost with uniform marginals, detached; its rows
    normalised to sum to 1 unless ``normalize_rows=False`` (then the raw plan, for checking marginals)."""
    c = cost.double()
    n, m = c.shape
    log_a, log_b = torch.full((n,), -math.log(n), dtype=c.dtype), torch.full((m,), -math.log(m), dtype=c.dtype)
    log_a, log_b = log_a.to(c.device), log_b.to(c.device)
    k = sinkhorn_exponent(epsilon, mass)
    kernel = -c / epsilon
    log_u, log_v = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(iterations):
        previous = log_u
        log_u = k * (log_a - torch.logsumexp(kernel + log_v[None], dim=1))
        log_v = k * (log_b - torch.logsumexp(kernel + log_u[:, None], dim=0))
        if (log_u - previous).abs().max() < tolerance:
            break
    plan = torch.exp(log_u[:, None] + kernel + log_v[None])
    if normalize_rows:
        plan = plan / plan.sum(-1, keepdim=True)
    return plan.to(cost.dtype)


def fuse_attention(attention: torch.Tensor, plan: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``softmax(log clamp(A) + log clamp(P))`` on the selected (lexical) ``rows`` of ``attention`` ``(..., N, M)``;
    the other rows are returned unchanged. The plan is detached: gradients flow through the attention only."""
    fused = torch.softmax(torch.log(attention.clamp_min(CLAMP)) + torch.log(plan.detach().clamp_min(CLAMP)), dim=-1)
    mask = torch.zeros(attention.shape[-2], dtype=torch.bool, device=attention.device)
    mask[rows] = True
    return torch.where(mask[:, None], fused, attention)


def check_single_video(batch_size: int) -> None:
    """The released token-level reward solves one plan per video: a batch of more is refused, naming it."""
    if batch_size != 1:
        raise ValueError(f"the token-level OT reward (POT enabled) takes one video at a time; got a batch of "
                         f"{batch_size} (score each video separately)")
