"""ImageReward (Xu et al. 2023), through its own package when installed (extra ``imagereward``)."""

from __future__ import annotations

import torch

from genrl.utils.optional import require

from .base import Reward, RewardOutput
from .registry import register_reward


@register_reward("imagereward")
class ImageRewardReward(Reward):
    """``ImageReward.load(model).score(prompt, images)``: the BLIP-based human-preference score.

    ``model`` is a release name (``"ImageReward-v1.0"``) or a checkpoint path (then ``med_config``
    names its BLIP config); ``download_root`` is where the package caches weights.
    """

    def __init__(self, model: str = "ImageReward-v1.0", med_config: str | None = None,
                 download_root: str | None = None, device: str | torch.device = "cpu") -> None:
        image_reward = require("ImageReward")
        self.model = image_reward.load(model, device=str(device), download_root=download_root,
                                       med_config=med_config)
        self.model.eval()

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        from PIL import Image

        pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        scores = torch.empty(len(prompts))
        by_prompt: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_prompt.setdefault(prompt, []).append(i)
        for prompt, rows in by_prompt.items():  # the package scores one prompt against a list of images
            out = self.model.score(prompt, [Image.fromarray(pixels[i]) for i in rows])
            scores[rows] = torch.tensor(out if isinstance(out, list) else [out], dtype=torch.float32)
        return RewardOutput(scores)
