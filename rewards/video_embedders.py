"""Video and text embeddings in one space, for the distributional reward R_Q and its OT map.

``build_video_text_embedder(spec)`` takes:

- ``"toy"`` or the directory of a :class:`rewards.video_text.VideoTextModel` (``save_pretrained`` layout with
  its tokenizer): the model's contrastive projections;
- ``"xclip:<hub id or directory>"``: a transformers X-CLIP (``microsoft/xclip-base-patch32``): its video and text
  features, the clip's frames sampled evenly to the model's frame count and resized to its image size;
- ``"clip:<open_clip name>"`` (``clip:hf-hub:...``, ``clip:local-dir:...``, ``clip:ViT-B-32`` with ``pretrained``):
  per-frame CLIP, the mean of the unit frame embeddings, renormalised.

Every embedder returns unit vectors, differentiable in the pixels of ``(N, F, 3, H, W)`` clips in [0, 1]; the text
side runs without gradients.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .base import projected_features

#: CLIP's pixel statistics (X-CLIP's processor uses them)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def even_frames(videos: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` frames of each ``(N, F, ...)`` clip at evenly spaced indices from the first to the last."""
    index = torch.linspace(0, videos.shape[1] - 1, count).round().long().to(videos.device)
    return videos.index_select(1, index)


def resize_frames(videos: torch.Tensor, size: tuple[int, int], mean, std) -> torch.Tensor:
    """Frames resized (bicubic, antialiased) to ``size`` and normalised by ``mean`` / ``std`` (differentiable)."""
    n, f = videos.shape[:2]
    x = videos.flatten(0, 1).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).view(n, f, 3, *size)


class ToyVideoTextEmbedder:
    """The contrastive embeddings of a :class:`~rewards.video_text.VideoTextModel`."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        from .video_text import load_video_text_model

        self.model, self.tokenizer = load_video_text_model(path, device)
        self.device = torch.device(device)
        self.dim = self.model.config.embed_dim

    def embed_video(self, videos: torch.Tensor) -> torch.Tensor:
        return self.model.encode_video(videos.to(self.device))[1]

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        ids, mask = self.model.tokenize(self.tokenizer, prompts)
        return self.model.encode_text(ids.to(self.device), mask.to(self.device))[1]


class XClipEmbedder:
    """transformers' X-CLIP video and text features."""

    def __init__(self, name: str, device: str | torch.device = "cpu") -> None:
        from transformers import AutoTokenizer, XCLIPModel

        self.model = XCLIPModel.from_pretrained(name).to(device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        vision = self.model.config.vision_config
        self.num_frames, self.size = vision.num_frames, (vision.image_size, vision.image_size)
        self.device = torch.device(device)
        self.dim = self.model.config.projection_dim

    def embed_video(self, videos: torch.Tensor) -> torch.Tensor:
        pixels = resize_frames(even_frames(videos.to(self.device), self.num_frames), self.size, CLIP_MEAN, CLIP_STD)
        return F.normalize(projected_features(self.model.get_video_features(pixel_values=pixels)), dim=-1)

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        return F.normalize(projected_features(self.model.get_text_features(**enc)), dim=-1)


class FrameClipEmbedder:
    """Per-frame open_clip: the renormalised mean of a clip's unit frame embeddings."""

    def __init__(self, name: str, pretrained: str | None = None, device: str | torch.device = "cpu") -> None:
        import open_clip

        self.model = open_clip.create_model(name, pretrained=pretrained, device=device).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(name)
        cfg = self.model.visual.preprocess_cfg
        self.size = tuple(cfg["size"]) if isinstance(cfg["size"], (tuple, list)) else (cfg["size"],) * 2
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.device = torch.device(device)
        self.dim = self.model.visual.output_dim

    def embed_video(self, videos: torch.Tensor) -> torch.Tensor:
        pixels = resize_frames(videos.to(self.device), self.size, self.mean, self.std)
        frames = F.normalize(self.model.encode_image(pixels.flatten(0, 1)), dim=-1).view(*pixels.shape[:2], -1)
        return F.normalize(frames.mean(1), dim=-1)

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)), dim=-1)


def build_video_text_embedder(spec: str = "toy", pretrained: str | None = None, device: str | torch.device = "cpu"):
    """An embedder by spec (see the module docstring)."""
    if spec.startswith("xclip:"):
        return XClipEmbedder(spec.removeprefix("xclip:"), device)
    if spec.startswith("clip:"):
        return FrameClipEmbedder(spec.removeprefix("clip:"), pretrained, device)
    return ToyVideoTextEmbedder(None if spec == "toy" else spec, device)
