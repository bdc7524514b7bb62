"""Adv-GRPO's "image as its own reward" metric: CLS-feature similarity to the prompt's reference images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backbones import build_backbone
from .base import Reward, RewardOutput
from .references import ReferenceImages
from .registry import register_reward


@register_reward("reference_similarity")
class ReferenceSimilarityReward(Reward):
    """Mean cosine similarity between the CLS embedding of an image and those of its prompt's references.

    ``backbone`` is a DINOv2 id/dir or ``"toy"`` (see :func:`rewards.backbones.build_backbone`);
    ``references`` is ``"toy"`` or a folder (see :class:`rewards.references.ReferenceImages`). With
    an unpaired folder every image is compared with the whole pool.
    """

    def __init__(self, backbone: str = "facebook/dinov2-base", references: str = "toy", per_prompt: int = 8,
                 seed: int = 0, image_size: int | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.backbone = build_backbone(backbone).to(self.device)
        self.references = ReferenceImages(references, per_prompt=per_prompt, heldout=0, seed=seed,
                                          image_size=image_size)
        self._embedded: dict[str, torch.Tensor] = {}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm CLS embeddings of ``(N, 3, H, W)`` images in [0, 1]."""
        return F.normalize(self.backbone(images.to(self.device))[0], dim=-1)

    def _reference_embeddings(self, prompt: str, metadata: dict) -> torch.Tensor:
        key = prompt if self.references.paired else ""
        if key not in self._embedded:
            self._embedded[key] = self.embed(self.references.all_for(prompt, metadata).float() / 255.0)
        return self._embedded[key]

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        emb = self.embed(images)
        refs = [self._reference_embeddings(p, m) for p, m in zip(prompts, metadata, strict=True)]
        scores = torch.stack([(ref @ e).mean() for e, ref in zip(emb, refs, strict=True)])
        return RewardOutput(scores.float().cpu())
