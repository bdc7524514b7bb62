"""CLIPScore with an open_clip model: cosine similarity of image and prompt embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Reward, RewardOutput
from .registry import register_reward


@register_reward("clip_score")
class ClipScoreReward(Reward):
    """``scale * max(cos(image, text), 0)`` (Hessel et al. use ``scale = 2.5``), differentiable in the pixels.

    ``model`` is anything ``open_clip.create_model_and_transforms`` takes: a built-in name with a
    ``pretrained`` tag or file (``"ViT-L-14", pretrained="openai"``), ``"hf-hub:org/repo"``,
    ``"local-dir:/path"``, or ``"toy"`` for the toy world's CLIP (shipped in ``rewards.toyworld``).
    """

    differentiable = True

    def __init__(self, model: str = "toy", pretrained: str | None = None, scale: float = 1.0,
                 device: str | torch.device = "cpu") -> None:
        import open_clip

        if model == "toy":
            from .toyworld import TOY_CLIP_DIR

            model = f"local-dir:{TOY_CLIP_DIR}"
        self.model = open_clip.create_model(model, pretrained=pretrained, device=device).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model)
        cfg = self.model.visual.preprocess_cfg
        self.image_size = tuple(cfg["size"]) if isinstance(cfg["size"], (tuple, list)) else (cfg["size"],) * 2
        self.mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
        self.scale = scale
        self.device = torch.device(device)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings of ``(N, 3, H, W)`` images in [0, 1] (differentiable)."""
        x = images.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
        return F.normalize(self.model.encode_image((x - self.mean) / self.std), dim=-1)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        with torch.no_grad():
            text = F.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)), dim=-1)
        cos = (self.embed_images(images) * text).sum(-1)
        return RewardOutput(self.scale * cos.clamp(min=0), {"cosine": cos.detach().cpu().tolist()})
