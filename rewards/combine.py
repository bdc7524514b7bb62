"""Weighted combination of rewards, logging each component and flagging non-finite scores by name."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch

from .base import Reward, RewardOutput, check_media_for_all, common_modality
from .media import Media
from .registry import build_reward


class WeightedSum(Reward):
    """``sum_k w_k s_k`` over named rewards (no per-reward normalisation, as Flow-GRPO).

    Each component's scores are returned in ``info[name]``. A sample with a NaN/inf score from
    any component gets a NaN total (so the trainer excludes it rather than averaging it in), and
    ``info["nonfinite"]`` maps each offending reward's name to the sample indices, with a warning.
    """

    def __init__(self, rewards: Mapping[str, float | tuple[float, dict]] | Mapping[str, Reward],
                 weights: Mapping[str, float] | None = None) -> None:
        self.components: dict[str, Reward] = {}
        self.weights: dict[str, float] = {}
        for name, spec in rewards.items():
            if isinstance(spec, Reward):
                self.components[name], self.weights[name] = spec, float((weights or {}).get(name, 1.0))
            elif isinstance(spec, tuple):
                weight, options = spec
                self.components[name], self.weights[name] = build_reward(name, **options), float(weight)
            else:
                self.components[name], self.weights[name] = build_reward(name), float(spec)
        if not self.components:
            raise ValueError("WeightedSum needs at least one reward")
        self.required_metadata = tuple(sorted({k for r in self.components.values() for k in r.required_metadata}))
        self.differentiable = all(r.differentiable for r in self.components.values())
        self.modality = common_modality("WeightedSum", list(self.components.values()))

    def media_tensor(self, media: Media) -> torch.Tensor:
        return check_media_for_all(list(self.components.values()), media)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        total = torch.zeros(images.shape[0], device=images.device)
        info: dict = {"nonfinite": {}}
        for name, reward in self.components.items():
            scores = reward(images, prompts, metadata).scores.to(total.device, torch.float32)
            bad = ~torch.isfinite(scores)
            if bad.any():
                idx = bad.nonzero().flatten().tolist()
                info["nonfinite"][name] = idx
                warnings.warn(f"reward {name!r} returned non-finite scores for samples {idx}; they are excluded",
                              RuntimeWarning, stacklevel=2)
            info[name] = scores.detach()
            total = total + self.weights[name] * scores
        return RewardOutput(total, info)
