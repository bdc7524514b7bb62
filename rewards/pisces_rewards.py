"""PISCES's two rewards (``shared/reference/pisces.md``), on the OT pieces of :mod:`rewards.pisces`:

- ``pisces_quality`` (R_Q, distributional): ``cos(v, normalize(T(normalize(t))))`` with a trained OT map ``T``
  carrying the prompt's text embedding into the video-embedding distribution, ``v`` the clip's embedding
  (:mod:`rewards.video_embedders`: the toy video-text model, X-CLIP or per-frame CLIP);
- ``pisces_semantic`` (R_S, token-level): the matching head's positive-class probability of a video-text model
  whose cross-attention rows of the prompt's word tokens are fused with the unbalanced Sinkhorn plan between those
  tokens and the clip's spatio-temporal tokens, in every fusion layer and head.

Both are differentiable in the pixels (the plan, the text side, ``T`` and the models are frozen and carry no
gradient). The released token-level reward solves one plan per video; the reward scores a batch one clip at a
time through :func:`semantic_reward`, which takes a single clip.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .base import Reward, RewardOutput
from .pisces import (
    OTMap,
    check_single_video,
    fuse_attention,
    quality_reward,
    token_cost,
    unbalanced_sinkhorn,
    video_token_geometry,
)
from .registry import register_reward

OT_MAP_CONFIG = "ot_map.json"
OT_MAP_WEIGHTS = "ot_map.safetensors"


def save_ot_map(T: OTMap, out_dir: str | Path, extra: dict | None = None) -> None:
    """Write the map's sizes (plus ``extra`` facts, e.g. the embedder it was trained on and its selection
    metrics) and safetensors weights to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dim, hidden = T[0].in_features, T[0].out_features
    save_file({k: v.detach().contiguous().cpu() for k, v in T.state_dict().items()}, out / OT_MAP_WEIGHTS)
    (out / OT_MAP_CONFIG).write_text(json.dumps({"dim": dim, "hidden": hidden, **(extra or {})}, indent=2))


def load_ot_map(path: str | Path, device: str | torch.device = "cpu") -> tuple[OTMap, dict]:
    """A frozen OT map and its config from a directory written by :func:`save_ot_map`."""
    path = Path(path)
    if not (path / OT_MAP_CONFIG).is_file():
        raise FileNotFoundError(f"no OT map at {path} ({OT_MAP_CONFIG} missing); train one with "
                                "`python scripts/train_ot_map.py`")
    config = json.loads((path / OT_MAP_CONFIG).read_text())
    T = OTMap(config["dim"], config["hidden"])
    T.load_state_dict(load_file(path / OT_MAP_WEIGHTS))
    return T.to(device).eval().requires_grad_(False), config


@register_reward("pisces_quality")
class PiscesQualityReward(Reward):
    """R_Q in [-1, 1]: the cosine of a clip's embedding and its prompt's OT-mapped text embedding.

    ``embedder``: ``"toy"`` (the toy video-text model), a video-text model directory, ``"xclip:<id>"`` or
    ``"clip:<open_clip name>"`` (see :mod:`rewards.video_embedders`); ``ot_map``: a directory written by
    ``scripts/train_ot_map.py`` for that embedder (default with ``"toy"``: the shipped toy map)."""

    name = "pisces_quality"
    modality = "video"
    differentiable = True

    def __init__(self, embedder: str = "toy", ot_map: str | None = None, pretrained: str | None = None,
                 device: str | torch.device = "cpu") -> None:
        from .toyvideo import TOY_OT_MAP_DIR
        from .video_embedders import build_video_text_embedder

        if ot_map is None and embedder != "toy":
            raise ValueError(f"pisces_quality: embedder {embedder!r} needs its own ot_map (train one with "
                             "`python scripts/train_ot_map.py`)")
        self.embedder = build_video_text_embedder(embedder, pretrained, device)
        self.T, config = load_ot_map(ot_map or TOY_OT_MAP_DIR, device)
        if config["dim"] != self.embedder.dim:
            raise ValueError(f"pisces_quality: the OT map at {ot_map or TOY_OT_MAP_DIR} maps {config['dim']}-d "
                             f"embeddings but embedder {embedder!r} gives {self.embedder.dim}-d ones")

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        text = self.embedder.embed_text(prompts)
        scores = quality_reward(self.embedder.embed_video(images), text, self.T)
        return RewardOutput(scores, {})


def ot_fusion_hook(lexical: torch.Tensor, frames: torch.Tensor, positions: torch.Tensor, num_frames: int):
    """A cross-attention hook (:data:`rewards.video_text.AttentionHook`) fusing, for one clip, the unbalanced OT
    plan between the ``lexical`` (``(N,)`` bool) text tokens and the video tokens into those rows of every head."""
    rows = lexical.nonzero().squeeze(1)

    def hook(probs: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor, layer: int) -> torch.Tensor:
        check_single_video(probs.shape[0])
        heads = []
        for attention in probs[0]:
            cost = token_cost(queries[0, rows], keys[0], attention[rows], frames, positions, num_frames)
            plan = torch.ones_like(attention).index_copy(0, rows, unbalanced_sinkhorn(cost).to(attention.dtype))
            heads.append(fuse_attention(attention, plan, rows))
        return torch.stack(heads)[None]

    return hook


def semantic_reward(model, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    pot: bool = True) -> torch.Tensor:
    """R_S of one clip ``(1, F, 3, H, W)`` and its tokenised prompt ``(1, N)``: the matching probability with the
    OT plan fused into the cross-attention (``pot=False``: the plain matching probability)."""
    check_single_video(video.shape[0])
    video_tokens, _ = model.encode_video(video)
    with torch.no_grad():
        text_tokens, _ = model.encode_text(input_ids, attention_mask)
    hook = None
    if pot:
        c = model.config
        frames, positions = (t.to(video.device) for t in video_token_geometry(c.num_frames, c.grid))
        hook = ot_fusion_hook(model.lexical_rows(input_ids, attention_mask)[0], frames, positions, c.num_frames)
    return torch.softmax(model.match_logits(text_tokens, attention_mask, video_tokens, hook).float(), -1)[:, 1]


def load_user_model(loader: str):
    """``(model, tokenizer)`` from a user's ``"package.module:function"`` (e.g. an InternVideo2 wrapper with the
    :class:`~rewards.video_text.VideoTextModel` interface)."""
    module, _, function = loader.partition(":")
    if not module or not function:
        raise ValueError(f"pisces_semantic: loader must be 'package.module:function', got {loader!r}")
    try:
        load = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"pisces_semantic: cannot load loader {loader!r}: {err}") from None
    return load()


@register_reward("pisces_semantic")
class PiscesSemanticReward(Reward):
    """R_S in [0, 1]: the OT-fused matching probability of each clip and its prompt.

    ``model``: ``"toy"`` or the directory of a :class:`~rewards.video_text.VideoTextModel`; ``loader``:
    ``"package.module:function"`` returning ``(model, tokenizer)`` of another model with that interface (e.g. an
    InternVideo2 wrapper; its code is the user's, loaded only when named). ``pot=False`` scores the plain matching
    probability (the ablation without token-level OT)."""

    name = "pisces_semantic"
    modality = "video"
    differentiable = True

    def __init__(self, model: str = "toy", loader: str | None = None, pot: bool = True,
                 device: str | torch.device = "cpu") -> None:
        from .video_text import load_video_text_model

        if loader is not None:
            model_, self.tokenizer = load_user_model(loader)
            # frozen and on this reward's device, as the shipped model is: PISCES never trains its reward model
            self.model = model_.to(device).eval().requires_grad_(False)
        else:
            self.model, self.tokenizer = load_video_text_model(None if model == "toy" else model, device)
        self.pot = pot

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        self.model.check_video(images)
        ids, mask = self.model.tokenize(self.tokenizer, prompts)
        scores = [semantic_reward(self.model, clip[None].to(self.model.device), ids[i:i + 1], mask[i:i + 1],
                                  self.pot) for i, clip in enumerate(images)]
        return RewardOutput(torch.cat(scores), {})
