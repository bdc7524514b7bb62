"""DINOv2 image similarity to a per-sample reference image (editing and subject rewards; Adv-GRPO's features)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Reward, RewardOutput, to_image_tensor
from .registry import register_reward


@register_reward("dino_similarity")
class DinoSimilarityReward(Reward):
    """``cos(DINOv2_CLS(image), DINOv2_CLS(metadata["reference_image"]))`` with transformers.

    ``model`` is a hub id (``facebook/dinov2-base``) or a local directory. Images are resized and
    normalised by the model's image processor.
    """

    required_metadata = ("reference_image",)

    def __init__(self, model: str = "facebook/dinov2-base", device: str | torch.device = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.device = torch.device(device)
        self.processor = AutoImageProcessor.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm CLS features of ``(N, 3, H, W)`` images in [0, 1]."""
        pixels = list((images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu())
        inputs = self.processor(images=pixels, return_tensors="pt").to(self.device)
        return F.normalize(self.model(**inputs).last_hidden_state[:, 0].float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        refs = torch.cat([_one_image(m["reference_image"]) for m in metadata])
        return RewardOutput((self.embed(images) * self.embed(refs)).sum(-1).cpu())


def _one_image(image) -> torch.Tensor:
    """A reference image (PIL, ``(H, W, 3)`` array or ``(3, H, W)`` tensor) as a batch of one."""
    if isinstance(image, torch.Tensor):
        return to_image_tensor(image[None] if image.ndim == 3 else image)
    return to_image_tensor([image])
