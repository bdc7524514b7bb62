"""JPEG compressibility: smaller files score higher (DDPO's and Flow-GRPO's ``jpeg_compressibility``)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from .base import Reward, RewardOutput
from .registry import register_reward


def jpeg_size_kb(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """Size in kB (1000 bytes) of each ``(N, 3, H, W)`` [0, 1] image saved as JPEG at ``quality``."""
    arrays = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    sizes = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32)


@register_reward("jpeg_compressibility")
class JpegCompressibilityReward(Reward):
    """``-size_kB / 500`` of the JPEG (quality 95) of each image; ``sign=+1`` gives incompressibility."""

    def __init__(self, quality: int = 95, scale: float = 500.0, sign: float = -1.0) -> None:
        self.quality, self.scale, self.sign = quality, scale, sign

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        sizes = jpeg_size_kb(images, self.quality)
        return RewardOutput(self.sign * sizes / self.scale, {"size_kb": sizes})
