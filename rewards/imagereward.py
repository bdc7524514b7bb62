"""ImageReward (Xu et al. 2023) rebuilt on transformers' BLIP modules, loading the released weights.

The ``image-reward`` package (1.5) imports helpers that transformers has since removed, so it cannot
run next to the transformers genrl needs. The network is small enough to rebuild from the
ecosystem's parts: transformers' ``BlipVisionModel`` (BLIP's ViT-L/16 at 224 px) encodes the image,
``BlipTextModel`` (BLIP's text encoder, cross-attending to the image tokens) encodes the prompt, and
the package's MLP head maps the ``[CLS]`` feature to a score normalised by the release's mean and
std. :func:`convert_imagereward_state_dict` renames the released checkpoint's keys; the test
``tests/test_imagereward.py`` checks the result against scores computed by the package itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import Reward, RewardOutput
from .registry import register_reward
from .weight_files import load_weight_file

#: Release name -> (hub repo, checkpoint file), as the package's ``ImageReward.load`` names them.
RELEASES = {"ImageReward-v1.0": ("THUDM/ImageReward", "ImageReward.pt")}
#: The release's score normalisation (``ImageReward.mean`` / ``ImageReward.std``).
SCORE_MEAN, SCORE_STD = 0.16717362830052426, 1.0333394966054072
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: BLIP's ViT-L/16 (``create_vit("large", 224)``; timm-style LayerNorm eps 1e-6).
VISION_DEFAULTS = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                   "num_attention_heads": 16, "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6,
                   "hidden_act": "gelu"}
#: BLIP's ``med_config.json`` (BERT-base with cross-attention; two added tokens, [DEC] and [ENC]).
TEXT_DEFAULTS = {"vocab_size": 30524, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "max_position_embeddings": 512, "layer_norm_eps": 1e-12,
                 "hidden_act": "gelu", "pad_token_id": 0}
_MED_CONFIG_KEYS = set(TEXT_DEFAULTS) | {"hidden_dropout_prob", "attention_probs_dropout_prob"}


class ImageRewardHead(nn.Module):
    """The package's ``MLP``: five linear layers without activations (dropout between them)."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                                    nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16),
                                    nn.Linear(16, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ImageRewardModel(nn.Module):
    """Image encoder, cross-attending text encoder and MLP head; returns normalised scores ``(N,)``."""

    def __init__(self, vision: dict | None = None, text: dict | None = None) -> None:
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        super().__init__()
        vision_cfg = BlipVisionConfig(**{**VISION_DEFAULTS, **(vision or {})})
        text_cfg = BlipTextConfig(**{**TEXT_DEFAULTS, **(text or {}), "encoder_hidden_size": vision_cfg.hidden_size})
        self.image_size = vision_cfg.image_size
        self.vision_model = BlipVisionModel(vision_cfg)
        self.text_encoder = BlipTextModel(text_cfg, add_pooling_layer=False)
        self.mlp = ImageRewardHead(text_cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask,
                                 encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)
        return ((self.mlp(text.last_hidden_state[:, 0, :]) - SCORE_MEAN) / SCORE_STD)[:, 0]


_BLOCK_RENAMES = (("norm1.", "layer_norm1."), ("norm2.", "layer_norm2."), ("attn.qkv.", "self_attn.qkv."),
                  ("attn.proj.", "self_attn.projection."), ("mlp.", "mlp."))


def _vision_key(key: str) -> str | None:
    """A timm-style BLIP ViT key -> the ``BlipVisionModel`` key (``None`` for keys it has no use for)."""
    fixed = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
             "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
             "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
             "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
    if key in fixed:
        return fixed[key]
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if match:
        for old, new in _BLOCK_RENAMES:
            if match[2].startswith(old):
                return f"encoder.layers.{match[1]}.{new}{match[2][len(old):]}"
    return None


def convert_imagereward_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released checkpoint (``blip.visual_encoder.*``, ``blip.text_encoder.*``, ``mlp.*``) in the keys of
    :class:`ImageRewardModel`. Keys the score does not use (BLIP's projections, ``position_ids``) are dropped;
    an unrecognised vision key is an error rather than a silently random layer."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            new = _vision_key(key.removeprefix("blip.visual_encoder."))
            if new is None:
                raise KeyError(f"imagereward: unrecognised vision weight {key!r} in the checkpoint")
            out[f"vision_model.{new}"] = value
        elif key.startswith("blip.text_encoder.") and not key.endswith("position_ids"):
            out[f"text_encoder.{key.removeprefix('blip.text_encoder.')}"] = value
        elif key.startswith("mlp."):
            out[key] = value
    return out


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` on ``(N, 3, H, W)`` tensors, differentiable."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    new_h, new_w = (size, new_long) if height <= width else (new_long, size)
    images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    return images[..., top:top + size, left:left + size]


def _checkpoint_path(model: str) -> Path:
    if model in RELEASES:
        from huggingface_hub import hf_hub_download

        repo, filename = RELEASES[model]
        return Path(hf_hub_download(repo, filename))
    path = Path(model)
    if path.is_dir():
        found = [path / n for n in ("ImageReward.safetensors", "ImageReward.pt") if (path / n).is_file()]
        return found[0] if found else path / "ImageReward.pt"
    return path


@register_reward("imagereward")
class ImageRewardReward(Reward):
    """ImageReward's human-preference score of each image for its prompt, differentiable in the pixels.

    ``model`` is a release name (``"ImageReward-v1.0"``, fetched from the hub), a checkpoint file
    (``.pt`` read with ``weights_only=True``, or ``.safetensors``) or a directory holding
    ``ImageReward.pt``. ``tokenizer`` is BERT's (``bert-base-uncased`` or a local directory), to which
    BLIP's ``[DEC]`` and ``[ENC]`` tokens are added. ``med_config`` (the release's
    ``med_config.json``) or ``text_config`` / ``vision_config`` override the architecture.
    """

    differentiable = True

    def __init__(self, model: str = "ImageReward-v1.0", tokenizer: str = "bert-base-uncased",
                 med_config: str | None = None, text_config: dict | None = None, vision_config: dict | None = None,
                 max_length: int = 35, allow_pickle: bool = False, device: str | torch.device = "cpu") -> None:
        from transformers import BertTokenizer

        text = {}
        if med_config is not None:
            text = {k: v for k, v in json.loads(Path(med_config).read_text()).items() if k in _MED_CONFIG_KEYS}
        path = _checkpoint_path(model)
        state = load_weight_file(path, "imagereward", allow_pickle,
                                 hint="pass a release name (ImageReward-v1.0), a checkpoint file or its directory")
        self.device = torch.device(device)
        self.model = ImageRewardModel(vision_config, {**text, **(text_config or {})})
        try:
            self.model.load_state_dict(convert_imagereward_state_dict(state.get("state_dict", state)))
        except RuntimeError as err:
            raise RuntimeError(f"imagereward: {str(path)!r} does not fit the ImageReward architecture (set med_config, "
                               f"text_config or vision_config for a different one):\n{err}") from err
        self.model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = BertTokenizer.from_pretrained(tokenizer)
        self.tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
        self.max_length = max_length
        self.mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """The package's preprocessing (bicubic resize of the short side, centre crop, CLIP normalisation)."""
        x = resize_center_crop(images.to(self.device, torch.float32), self.model.image_size)
        return (x - self.mean) / self.std

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        scores = self.model(self.pixel_values(images), tokens.input_ids, tokens.attention_mask)
        return RewardOutput(scores.float())

