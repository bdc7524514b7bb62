"""Video rewards from image rewards: an image reward applied to a clip's frames and averaged."""

from __future__ import annotations

from typing import Any

import torch

from .base import Reward, RewardOutput
from .registry import build_reward, register_reward


@register_reward("frame_mean")
class FrameMeanReward(Reward):
    """The mean over frames of an image reward: ``reward`` (a registered image reward's name) with ``options``,
    scoring every ``stride``-th frame of each ``(F, 3, H, W)`` clip (from the first) against the clip's prompt
    and metadata. ``info["<reward>/frames"]`` holds the per-frame scores ``(N, F_scored)``."""

    name = "frame_mean"
    modality = "video"

    def __init__(self, reward: str, options: dict[str, Any] | None = None, stride: int = 1) -> None:
        if stride < 1:
            raise ValueError(f"frame_mean: stride must be >= 1, got {stride}")
        self.inner = build_reward(reward, **dict(options or {}))
        if self.inner.modality != "image":
            raise ValueError(f"frame_mean: reward {reward!r} scores {self.inner.modality}, not image frames")
        self.stride = stride
        self.required_metadata = self.inner.required_metadata
        self.differentiable = self.inner.differentiable

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        frames = images[:, :: self.stride]
        n, f = frames.shape[:2]
        out = self.inner(frames.reshape(n * f, *frames.shape[2:]), [p for p in prompts for _ in range(f)],
                         [m for m in metadata for _ in range(f)])
        per_frame = out.scores.float().reshape(n, f)
        return RewardOutput(per_frame.mean(dim=1), {f"{self.inner.name}/frames": per_frame.detach()})
