"""Training of PISCES's neural OT map (``shared/reference/pisces.md`` section 2) on text and video embeddings of
one embedder, with the release's selection metrics.

Rounds of :func:`rewards.pisces.ot_map_round`: ``map_steps`` map steps on text batches, then one potential step
against a batch of video embeddings (batches drawn independently: the objective matches distributions, not pairs).
Adam at ``lr`` for both networks (weight decay 1e-10), gradients clipped to 1, the learning rate decaying on a
cosine to 5 % over the run. Every ``eval_every`` rounds the map is scored on held-out *paired* embeddings by the
release's two metrics, mutual k-NN (k = 10) between ``T(X)`` and ``Y`` and the Spearman correlation of pairwise
distances within ``X`` and within ``T(X)``; the evaluated round with the best mutual k-NN is kept (the release's
selection among its saved maps; the untrained map is logged as round 0 but never selected: a near-identity map
keeps neighbourhoods without moving the texts at all).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .pisces import (
    MAP_STEPS_PER_POTENTIAL_STEP,
    OTMap,
    OTPotential,
    distance_spearman,
    mutual_knn,
    ot_map_round,
)


@dataclass
class OTMapTrainConfig:
    """Settings of an OT map's training (the release's values, but for the length of the run)."""

    seed: int = 0
    rounds: int = 10000
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-10
    mse_weight: float = 1.0
    map_steps: int = MAP_STEPS_PER_POTENTIAL_STEP
    hidden: int | None = None  # default: twice the embedding size (1024 for the release's 512)
    knn: int = 10
    eval_every: int = 1000


def map_metrics(T: OTMap, text: torch.Tensor, video: torch.Tensor, knn: int = 10) -> dict[str, float]:
    """Selection metrics of ``T`` on paired rows: mutual k-NN of ``T(X)`` and ``Y``, Spearman rho of ``X`` and
    ``T(X)``'s distances, and the mean R_Q-style cosine of each video with its own and with a shifted row's mapped
    text (how well the reward tells them apart)."""
    with torch.no_grad():
        mapped = T(F.normalize(text, dim=-1))
        cos = F.normalize(video, dim=-1) @ F.normalize(mapped, dim=-1).T
    return {"mutual_knn": mutual_knn(mapped, video, knn), "spearman": distance_spearman(text, mapped),
            "cos_paired": float(cos.diagonal().mean()), "cos_shifted": float(cos.roll(1, dims=1).diagonal().mean())}


def train_ot_map(text: torch.Tensor, video: torch.Tensor, held_text: torch.Tensor, held_video: torch.Tensor,
                 cfg: OTMapTrainConfig, log: Callable[[dict], None] = print) -> tuple[OTMap, dict]:
    """Train a map from the distribution of ``text`` embeddings ``(N, D)`` to that of ``video`` ``(M, D)``;
    returns the selected map and its record (round, metrics, config). ``held_*`` are paired held-out rows."""
    if cfg.rounds < 1 or cfg.eval_every < 1 or cfg.map_steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"rounds, eval_every, map_steps and batch_size must be >= 1; got {cfg.rounds}, "
                         f"{cfg.eval_every}, {cfg.map_steps}, {cfg.batch_size}")
    if text.shape[1] != video.shape[1]:
        raise ValueError(f"text and video embeddings differ in size: {text.shape[1]} and {video.shape[1]}")
    torch.manual_seed(cfg.seed)
    dim = text.shape[1]
    hidden = cfg.hidden or 2 * dim
    T, f = OTMap(dim, hidden), OTPotential(dim, hidden)
    opt_T = torch.optim.Adam(T.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt_f = torch.optim.Adam(f.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    decay = lambda r: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * r / cfg.rounds))
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_T, opt_f)]
    x_all, y_all = F.normalize(text.float(), dim=-1), F.normalize(video.float(), dim=-1)
    g = torch.Generator().manual_seed(cfg.seed)
    draw = lambda pool: pool[torch.randint(len(pool), (cfg.batch_size,), generator=g)]
    log({"round": 0, **map_metrics(T, held_text, held_video, cfg.knn)})  # the untrained map, for reference
    best: dict = {"mutual_knn": float("-inf")}
    best_state: dict = {}
    start = time.time()
    for r in range(1, cfg.rounds + 1):
        losses = ot_map_round(T, f, opt_T, opt_f, [draw(x_all) for _ in range(cfg.map_steps)], draw(y_all),
                              cfg.mse_weight)
        for s in schedules:
            s.step()
        if r % cfg.eval_every == 0 or r == cfg.rounds:
            record = {"round": r, **map_metrics(T, held_text, held_video, cfg.knn)}
            log({**record, **{k: round(v, 5) for k, v in losses.items()}, "elapsed_s": round(time.time() - start, 1)})
            if record["mutual_knn"] > best["mutual_knn"]:
                best, best_state = record, {k: v.clone() for k, v in T.state_dict().items()}
    T.load_state_dict(best_state)
    return T.eval().requires_grad_(False), {"selected": best, "config": asdict(cfg), "hidden": hidden}
