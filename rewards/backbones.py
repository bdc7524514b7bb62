"""Frozen image encoders that return a CLS token and patch tokens (Adv-GRPO's DINO features).

``build_backbone(name)`` accepts a DINOv2 hub id or local directory (transformers ``AutoModel``,
e.g. ``facebook/dinov2-base``), ``"toy"`` for the toy world's CLIP image tower (``rewards.toyworld``),
or ``"open_clip:<model>"`` / ``"local-dir:<path>"`` for any open_clip ViT. Both kinds return the
final-layer-normalised token sequence, as timm's ``forward_features`` does for DINOv2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TokenBackbone(nn.Module):
    """A frozen encoder: ``(N, 3, H, W)`` images in [0, 1] -> ``(cls (N, D), patches (N, P, D))``."""

    dim: int

    def __init__(self, image_size: tuple[int, int], mean, std) -> None:
        super().__init__()
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Bicubic resize to the encoder's input size and channel normalisation."""
        x = images.to(self.mean.device, torch.float32).clamp(0, 1)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 1 + P, D)`` normalised final tokens, CLS first (registers dropped)."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokens(self.preprocess(images)).float()
        return tokens[:, 0], tokens[:, 1:]


class Dinov2Backbone(TokenBackbone):
    """DINOv2 via transformers; ``image_size`` defaults to the model's (518 for the released ViTs)."""

    def __init__(self, model: str, image_size: int | None = None, trust_remote_code: bool = False) -> None:
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(model, trust_remote_code=trust_remote_code)
        size = int(image_size or encoder.config.image_size)
        mean, std = _processor_stats(model)
        super().__init__((size, size), mean, std)
        self.encoder = encoder.eval().requires_grad_(False)
        self.dim = int(encoder.config.hidden_size)
        self.num_registers = int(getattr(encoder.config, "num_register_tokens", 0) or 0)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(pixel_values=pixels).last_hidden_state  # after the final layer norm
        return torch.cat([hidden[:, :1], hidden[:, 1 + self.num_registers:]], dim=1)


class OpenClipBackbone(TokenBackbone):
    """The image tower of an open_clip ViT with a class token (``pool_type='tok'``), before its projection."""

    def __init__(self, model: str, pretrained: str | None = None) -> None:
        import open_clip

        if model == "toy":
            from .toyworld import TOY_CLIP_DIR

            model = f"local-dir:{TOY_CLIP_DIR}"
        elif model.startswith("open_clip:"):
            model = model[len("open_clip:"):]
        visual = open_clip.create_model(model, pretrained=pretrained).visual
        if getattr(visual, "pool_type", None) != "tok" or getattr(visual, "attn_pool", None) is not None:
            raise ValueError(f"open_clip model {model!r} has no class token to read (need a ViT with pool_type 'tok')")
        cfg = visual.preprocess_cfg
        size = tuple(cfg["size"]) if isinstance(cfg["size"], (tuple, list)) else (cfg["size"],) * 2
        super().__init__(size, cfg["mean"], cfg["std"])
        self.visual = visual.eval().requires_grad_(False)
        self.dim = int(visual.ln_post.normalized_shape[0])

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.visual
        return v.ln_post(v.transformer(v._embeds(pixels)))


def build_backbone(name: str, **options) -> TokenBackbone:
    """A frozen token backbone by name (see the module docstring)."""
    if name == "toy" or name.startswith(("open_clip:", "local-dir:")):
        return OpenClipBackbone(name, **options)
    return Dinov2Backbone(name, **options)


def _processor_stats(model: str) -> tuple[tuple, tuple]:
    """Normalisation statistics from the model's image processor, ImageNet's when it has none."""
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(model)
        return tuple(processor.image_mean), tuple(processor.image_std)
    except (OSError, ValueError, AttributeError):
        return IMAGENET_MEAN, IMAGENET_STD
