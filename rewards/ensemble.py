"""Reward-model ensembles (Coste et al., ICLR 2024): mean, worst-case (WCO) and uncertainty-weighted (UWO)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .base import Reward, RewardOutput, check_media_for_all, common_modality
from .media import Media
from .registry import build_reward_spec, register_reward

MODES = ("mean", "wco", "uwo")


def aggregate(member_scores: torch.Tensor, mode: str = "mean", lam: float = 0.1, ddof: int = 0) -> torch.Tensor:
    """Combine ``(k, N)`` member scores into ``(N,)``.

    ``mean``: average; ``wco``: minimum over members; ``uwo``: mean minus ``lam`` times the
    variance over members (``lam`` 0.1 for PPO-style RL, 0.5 for best-of-n in the paper).
    ``ddof=0`` is the population variance of the best-of-n code; the PPO code used ``ddof=1``.
    """
    if member_scores.ndim != 2:
        raise ValueError(f"expected member scores of shape (k, N), got {tuple(member_scores.shape)}")
    if mode == "mean":
        return member_scores.mean(0)
    if mode == "wco":
        return member_scores.min(0).values
    if mode == "uwo":
        return member_scores.mean(0) - lam * member_scores.var(0, correction=ddof)
    raise ValueError(f"unknown ensemble mode {mode!r}; expected one of {MODES}")


@register_reward("ensemble")
class Ensemble(Reward):
    """An ensemble of rewards aggregated per sample.

    ``members`` are rewards, or (from a config) mappings ``{name, options}`` of registered ones.

    Members of different scales (e.g. PickScore and CLIPScore) should be put on one scale before
    a minimum or a variance means anything: ``normalize=True`` z-scores each member over the batch.
    """

    def __init__(self, members: Sequence[Reward | Mapping[str, Any]], mode: str = "mean", lam: float = 0.1, ddof: int = 0,
                 normalize: bool = False) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if mode not in MODES:
            raise ValueError(f"unknown ensemble mode {mode!r}; expected one of {MODES}")
        built = [build_reward_spec(m, f"ensemble member {i}") for i, m in enumerate(members)]
        self.members, self.mode, self.lam, self.ddof, self.normalize = built, mode, lam, ddof, normalize
        self.required_metadata = tuple(sorted({k for m in self.members for k in m.required_metadata}))
        self.differentiable = all(m.differentiable for m in self.members)
        self.modality = common_modality("Ensemble", self.members)

    def media_tensor(self, media: Media) -> torch.Tensor:
        return check_media_for_all(self.members, media)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        scores = torch.stack([m(images, prompts, metadata).scores.float() for m in self.members])
        if self.normalize:
            scores = (scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + 1e-6)
        combined = aggregate(scores, self.mode, self.lam, self.ddof)
        return RewardOutput(combined, {"members": scores.detach(), "member_std": scores.detach().std(0)})

