"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on human preferences, loaded with transformers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Reward, RewardOutput, projected_features
from .registry import register_reward

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


@register_reward("pickscore")
class PickScoreReward(Reward):
    """``logit_scale * cos(image, prompt) / 26`` as Flow-GRPO's ``pickscore`` reward (about 0.8-0.9 on SD3.5).

    ``model`` and ``processor`` are hub ids or local directories (``CLIPModel`` and ``AutoProcessor``).
    Images go through the processor's resize/crop/normalise on uint8 pixels, as the reference does.
    """

    def __init__(self, model: str = PICKSCORE_MODEL, processor: str = PICKSCORE_PROCESSOR, scale: float = 1 / 26,
                 device: str | torch.device = "cpu", dtype: str = "float32") -> None:
        from transformers import AutoProcessor, CLIPModel

        self.device = torch.device(device)
        self.processor = AutoProcessor.from_pretrained(processor)
        self.model = CLIPModel.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.scale = scale

    def scores_with_grad(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores of ``images`` (float ``(N, 3, H, W)`` in [0, 1]) that keep gradients to the model's weights."""
        pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        image_inputs = self.processor(images=list(pixels), return_tensors="pt").to(self.device)
        text_inputs = self.processor(text=prompts, padding=True, truncation=True, max_length=77,
                                     return_tensors="pt").to(self.device)
        dtype = self.model.dtype
        image_embeds = F.normalize(projected_features(self.model.get_image_features(
            pixel_values=image_inputs["pixel_values"].to(dtype))).float(), dim=-1)
        text_embeds = F.normalize(projected_features(self.model.get_text_features(**text_inputs)).float(), dim=-1)
        return self.model.logit_scale.exp().float() * (image_embeds * text_embeds).sum(-1) * self.scale

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        scores = self.scores_with_grad(images, prompts)
        cos = scores / (self.model.logit_scale.exp().float() * self.scale)
        return RewardOutput(scores.cpu(), {"cosine": cos.cpu().tolist()})

