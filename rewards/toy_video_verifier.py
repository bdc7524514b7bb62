"""The toy video world's tracking verifier as a reward (``toy_video_verifier``)."""

from __future__ import annotations

import torch

from rewards.toyvideo.prompts import spec_from_prompt
from rewards.toyvideo.verifier import verify_clip
from rewards.toyvideo.world import FRAME_SIZE, NUM_FRAMES, VideoSpec

from .base import Reward, RewardOutput
from .registry import register_reward


@register_reward("toy_video_verifier")
class ToyVideoVerifierReward(Reward):
    """Strict (0/1) or partial-credit verifier score of toy clips (9 frames of 32 x 32, in [0, 1]).

    The spec comes from ``metadata["spec"]`` (a :class:`VideoSpec` or its dict) when present, otherwise from the
    prompt text. A clip of another frame count or size is a ``ValueError`` naming both; a clip with NaN pixels
    scores NaN (the trainer leaves such samples out, naming the reward).
    """

    name = "toy_video_verifier"
    modality = "video"

    def __init__(self, mode: str = "strict") -> None:
        if mode not in ("strict", "partial"):
            raise ValueError(f"toy_video_verifier mode must be 'strict' or 'partial', got {mode!r}")
        self.mode = mode

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        clips = images.detach().float().cpu()  # (N, F, 3, H, W)
        if tuple(clips.shape[1:]) != (NUM_FRAMES, 3, FRAME_SIZE, FRAME_SIZE):
            raise ValueError(f"reward 'toy_video_verifier' scores clips of {NUM_FRAMES} frames of {FRAME_SIZE} x "
                             f"{FRAME_SIZE}; got {clips.shape[1]} frames of {clips.shape[-2]} x {clips.shape[-1]}")
        info: dict[str, list] = {"strict": [], "partial": [], "reason": []}
        for clip, prompt, meta in zip(clips, prompts, metadata, strict=True):
            if not torch.isfinite(clip).all():
                verdict = (float("nan"), float("nan"), "non-finite pixels")
            else:
                spec = meta.get("spec")
                spec = VideoSpec.from_dict(spec) if isinstance(spec, dict) else spec or spec_from_prompt(prompt)
                v = verify_clip(clip.clamp(0, 1).numpy(), spec)
                verdict = (v.strict, v.partial, v.reason)
            for key, value in zip(("strict", "partial", "reason"), verdict, strict=True):
                info[key].append(value)
        return RewardOutput(torch.tensor(info[self.mode], dtype=torch.float32), info)
