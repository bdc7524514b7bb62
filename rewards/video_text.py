"""A small video-text model of the InternVideo2 + BERT-ITM shape, the backbone of the PISCES rewards on the toy
video world (``rewards.toyvideo.TOY_VIDEO_TEXT_DIR``; trained by ``scripts/train_toy_video_text.py``).

- **Video tower**: each frame cut into ``patch_size`` patches (a strided convolution), plus a learned frame-index
  and a learned spatial-position embedding, behind a ``[CLS]`` token; a pre-norm transformer encoder. The tokens
  are ``[CLS] + F x g x g`` patches, frame-major, the layout :func:`rewards.pisces.video_token_geometry` describes.
- **Text tower**: a BERT encoder (``transformers.BertModel``) over the toy tokenizer; its first token (the
  tokenizer's start token) plays ``[CLS]``.
- **Projections** of the two ``[CLS]`` states into a shared unit sphere (``text_proj`` / ``vision_proj``), trained
  contrastively; these are the embeddings the distributional reward R_Q and its OT map use.
- **Fusion encoder**: BERT-style post-norm layers over the text tokens, each a self-attention, a cross-attention to
  the video tokens and a feed-forward block; a 2-way matching head (ITM / VTM) on the fused ``[CLS]``. The
  cross-attention takes an ``attention_hook`` that may rewrite its attention probabilities: the token-level
  reward R_S fuses its unbalanced OT plan there (:mod:`rewards.pisces_rewards`).

It is a ``transformers.PreTrainedModel``: ``save_pretrained`` writes a config and safetensors weights and
``VideoTextModel.from_pretrained(path)`` reads them back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel

#: ``hook(probs (B, H, N, M), queries (B, N, W), keys (B, M, W), layer) -> probs``: rewrites a cross-attention's
#: probabilities (queries and keys are the full-width projections, heads concatenated)
AttentionHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


class VideoTextConfig(PretrainedConfig):
    """Sizes of a :class:`VideoTextModel` (the defaults: the toy world's model)."""

    model_type = "genrl_video_text"

    def __init__(self, vocab_size: int = 64, max_text_length: int = 16, num_frames: int = 9, image_size: int = 32,
                 patch_size: int = 8, width: int = 64, heads: int = 4, text_layers: int = 2, video_layers: int = 3,
                 fusion_layers: int = 2, embed_dim: int = 32, pixel_mean: float = 0.5, pixel_std: float = 0.5,
                 bos_token_id: int = 0, eos_token_id: int = 1, pad_token_id: int = 1, **kwargs) -> None:
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.vocab_size, self.max_text_length = vocab_size, max_text_length
        self.num_frames, self.image_size, self.patch_size = num_frames, image_size, patch_size
        self.width, self.heads = width, heads
        self.text_layers, self.video_layers, self.fusion_layers = text_layers, video_layers, fusion_layers
        self.embed_dim, self.pixel_mean, self.pixel_std = embed_dim, pixel_mean, pixel_std

    @property
    def grid(self) -> int:
        """Patches per side of a frame."""
        return self.image_size // self.patch_size


class CrossAttention(nn.Module):
    """Multi-head attention of text queries over video keys whose probabilities a hook may rewrite."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, text: torch.Tensor, video: torch.Tensor, hook: AttentionHook | None = None,
                layer: int = 0) -> torch.Tensor:
        b, n, w = text.shape
        q, k, v = self.query(text), self.key(video), self.value(video)
        split = lambda x: x.view(b, x.shape[1], self.heads, w // self.heads).transpose(1, 2)
        probs = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(w // self.heads), dim=-1)
        if hook is not None:
            probs = hook(probs, q, k, layer)
        return self.out((probs @ split(v)).transpose(1, 2).reshape(b, n, w))


class FusionLayer(nn.Module):
    """BERT's post-norm layer with a cross-attention to the video between its self-attention and feed-forward."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.self_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attention = CrossAttention(width, heads)
        self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))

    def forward(self, text: torch.Tensor, padding: torch.Tensor, video: torch.Tensor,
                hook: AttentionHook | None = None, layer: int = 0) -> torch.Tensor:
        h = self.norms[0](text + self.self_attention(text, text, text, key_padding_mask=padding, need_weights=False)[0])
        h = self.norms[1](h + self.cross_attention(h, video, hook, layer))
        return self.norms[2](h + self.feed_forward(h))


class VideoTextModel(PreTrainedModel):
    """Video tower, text tower, contrastive projections and a fusion encoder with a matching head."""

    config_class = VideoTextConfig
    base_model_prefix = "video_text"
    main_input_name = "video"

    def __init__(self, config: VideoTextConfig) -> None:
        super().__init__(config)
        c = config
        self.patch_embed = nn.Conv2d(3, c.width, c.patch_size, stride=c.patch_size)
        self.video_cls = nn.Parameter(torch.zeros(1, 1, c.width))
        self.frame_embed = nn.Parameter(torch.zeros(1, c.num_frames, 1, c.width))
        self.position_embed = nn.Parameter(torch.zeros(1, 1, c.grid * c.grid, c.width))
        layer = nn.TransformerEncoderLayer(c.width, c.heads, 4 * c.width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.video_encoder = nn.TransformerEncoder(layer, c.video_layers, enable_nested_tensor=False)
        self.video_norm = nn.LayerNorm(c.width)
        self.text_encoder = BertModel(BertConfig(
            vocab_size=c.vocab_size, hidden_size=c.width, num_hidden_layers=c.text_layers,
            num_attention_heads=c.heads, intermediate_size=4 * c.width, max_position_embeddings=c.max_text_length,
            type_vocab_size=1, pad_token_id=c.pad_token_id, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0), add_pooling_layer=False)
        self.vision_proj, self.text_proj = nn.Linear(c.width, c.embed_dim), nn.Linear(c.width, c.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fusion = nn.ModuleList(FusionLayer(c.width, c.heads) for _ in range(c.fusion_layers))
        self.itm_head = nn.Linear(c.width, 2)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, VideoTextModel):
            for p in (module.video_cls, module.frame_embed, module.position_embed):
                nn.init.normal_(p, std=0.02)
        elif isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def check_video(self, video: torch.Tensor) -> None:
        """``ValueError`` naming the shape unless ``video`` is ``(B, num_frames, 3, image_size, image_size)``."""
        c = self.config
        want = (c.num_frames, 3, c.image_size, c.image_size)
        if video.ndim != 5 or tuple(video.shape[1:]) != want:
            raise ValueError(f"the video-text model takes clips of shape (B, {', '.join(map(str, want))}) in [0, 1]; "
                             f"got {tuple(video.shape)}")

    def encode_video(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips ``(B, F, 3, H, W)`` in [0, 1] -> video tokens ``(B, 1 + F g^2, width)`` and unit embeddings
        ``(B, embed_dim)`` (differentiable in the pixels)."""
        self.check_video(video)
        c = self.config
        b, f = video.shape[:2]
        x = (video.to(self.video_cls.dtype) - c.pixel_mean) / c.pixel_std
        patches = self.patch_embed(x.flatten(0, 1)).flatten(2).transpose(1, 2).view(b, f, -1, c.width)
        patches = (patches + self.frame_embed + self.position_embed).flatten(1, 2)
        tokens = self.video_norm(self.video_encoder(torch.cat([self.video_cls.expand(b, -1, -1), patches], 1)))
        return tokens, F.normalize(self.vision_proj(tokens[:, 0]), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask ``(B, N)`` -> text tokens ``(B, N, width)`` and unit embeddings ``(B, embed_dim)``."""
        tokens = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return tokens, F.normalize(self.text_proj(tokens[:, 0]), dim=-1)

    def match_logits(self, text_tokens: torch.Tensor, attention_mask: torch.Tensor, video_tokens: torch.Tensor,
                     hook: AttentionHook | None = None) -> torch.Tensor:
        """The matching head's ``(B, 2)`` logits (class 1: the text describes the video) of paired rows."""
        h, padding = text_tokens, attention_mask == 0
        for i, layer in enumerate(self.fusion):
            h = layer(h, padding, video_tokens, hook, i)
        return self.itm_head(h[:, 0])

    def tokenize(self, tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask ``(B, max_text_length)`` of ``prompts``, on the model's device."""
        enc = tokenizer(prompts, padding="max_length", max_length=self.config.max_text_length, truncation=True,
                        return_tensors="pt")
        return enc.input_ids.to(self.device), enc.attention_mask.to(self.device)

    def lexical_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` mask of the word tokens: neither the start / end tokens nor padding."""
        c = self.config
        return (attention_mask > 0) & (input_ids != c.bos_token_id) & (input_ids != c.eos_token_id)


def load_video_text_model(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` from a directory written by ``save_pretrained`` with its tokenizer in ``tokenizer/``
    (default: the toy video world's shipped model), frozen and in eval mode."""
    from transformers import AutoTokenizer

    from .toyvideo import TOY_VIDEO_TEXT_DIR

    path = Path(path) if path is not None else TOY_VIDEO_TEXT_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no video-text model at {path} (config.json missing); train the toy one with "
                                "`python scripts/train_toy_video_text.py`")
    model = VideoTextModel.from_pretrained(path).to(device).eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(path / "tokenizer")
