"""Mean luminance: a sanity reward with a known optimum, for checking that an algorithm climbs at all."""

from __future__ import annotations

import torch

from .base import Reward, RewardOutput
from .registry import register_reward

#: ITU-R BT.601 luma weights
LUMA = (0.299, 0.587, 0.114)


@register_reward("brightness")
class BrightnessReward(Reward):
    """Mean luma of each image in [0, 1] (``sign=-1``: darkness). Differentiable in the pixels."""

    differentiable = True

    def __init__(self, sign: float = 1.0) -> None:
        self.sign = sign

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return RewardOutput(self.sign * (images * weights).sum(1).mean((1, 2)))
