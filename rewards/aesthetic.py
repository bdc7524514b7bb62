"""LAION aesthetic predictor: an MLP on unit-norm CLIP ViT-L/14 image embeddings (Flow-GRPO's ``aesthetic``)."""

from __future__ import annotations

import os

import torch
from torch import nn

from .base import Reward, RewardOutput
from .clip_score import ClipScoreReward
from .registry import register_reward

WEIGHTS_HINT = ("the LAION improved-aesthetic-predictor weights `sac+logos+ava1-l14-linearMSE.pth` "
                "(github.com/christophschuhmann/improved-aesthetic-predictor)")


class AestheticMLP(nn.Module):
    """The predictor's head: 768 -> 1024 -> 128 -> 64 -> 16 -> 1 with dropout (``layers.*`` keys)."""

    def __init__(self, in_features: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                                    nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16),
                                    nn.Linear(16, 1))

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(embeds).squeeze(-1)


@register_reward("aesthetic")
class AestheticReward(Reward):
    """``MLP(normalize(CLIP_image(x)))``, about 1-10; differentiable in the pixels.

    ``mlp_path`` is the predictor's ``.pth`` state dict (loaded with ``weights_only=True``); ``model``
    and ``pretrained`` select the open_clip image tower (``ViT-L-14`` / ``openai`` for the real one).
    """

    differentiable = True

    def __init__(self, mlp_path: str, model: str = "ViT-L-14", pretrained: str | None = "openai",
                 device: str | torch.device = "cpu") -> None:
        if not os.path.isfile(mlp_path):
            raise FileNotFoundError(f"aesthetic reward: MLP weights not found at {mlp_path!r}; download {WEIGHTS_HINT}")
        self.clip = ClipScoreReward(model, pretrained=pretrained, device=device)
        state = torch.load(mlp_path, map_location="cpu", weights_only=True)
        self.mlp = AestheticMLP(state["layers.0.weight"].shape[1])
        self.mlp.load_state_dict(state)
        self.mlp.to(device).eval().requires_grad_(False)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        return RewardOutput(self.mlp(self.clip.embed_images(images)))
