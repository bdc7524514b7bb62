"""Ink balance: a layout sanity reward, for checking that an algorithm can move *where* things are drawn."""

from __future__ import annotations

import torch

from .base import Reward, RewardOutput
from .registry import register_reward


@register_reward("ink_balance")
class InkBalanceReward(Reward):
    """Mean ink (1 - mean RGB) of one half of the image minus that of the other half, in [-1, 1].

    ``side="left"`` rewards ink on the left half, ``"right"`` on the right. Unlike mean brightness, this
    can only be raised by changing the layout, which the first, high-noise steps decide; it is the same
    for every prompt, so it isolates the sampler and optimizer from prompt-conditional difficulty.
    Differentiable in the pixels. An odd width leaves the middle column out.
    """

    differentiable = True

    def __init__(self, side: str = "left") -> None:
        if side not in ("left", "right"):
            raise ValueError(f"ink_balance: side must be 'left' or 'right', got {side!r}")
        self.sign = 1.0 if side == "left" else -1.0

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        ink = 1.0 - images.mean(dim=1)  # (B, H, W)
        half = ink.shape[-1] // 2
        left, right = ink[..., :half].mean(dim=(1, 2)), ink[..., ink.shape[-1] - half:].mean(dim=(1, 2))
        return RewardOutput(self.sign * (left - right))
