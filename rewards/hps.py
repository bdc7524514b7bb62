"""HPSv2.1: an open_clip ViT-H/14 fine-tuned on human preference pairs; the score is the image-prompt cosine."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .base import RewardOutput
from .clip_score import ClipScoreReward
from .registry import register_reward


@register_reward("hpsv2")
class HPSv2Reward(ClipScoreReward):
    """``cos(image, prompt)`` under the HPS checkpoint (about 0.25-0.35), as ``hpsv2.score``; differentiable.

    ``checkpoint`` is ``HPS_v2.1_compressed.pt`` (from the ``xswu/HPSv2`` hub repo) or any open_clip
    ``pretrained`` value for ``model``.
    """

    def __init__(self, checkpoint: str, model: str = "ViT-H-14", device: str | torch.device = "cpu") -> None:
        if model != "toy" and not os.path.isfile(checkpoint) and "/" in checkpoint:
            raise FileNotFoundError(f"hpsv2 reward: checkpoint not found: {checkpoint!r} "
                                    "(download HPS_v2.1_compressed.pt from the xswu/HPSv2 hub repo)")
        super().__init__(model, pretrained=checkpoint if model != "toy" else None, scale=1.0, device=device)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        with torch.no_grad():
            text = F.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)), dim=-1)
        cos = (self.embed_images(images) * text).sum(-1)
        return RewardOutput(cos)
