"""The toy edit world's verifier as a reward (the offline stand-in for an MLLM's edit rating)."""

from __future__ import annotations

import torch

from rewards.toyedit.verifier import verify_edit
from rewards.toyedit.world import as_edit_spec

from .base import Reward, RewardOutput
from .motion_alignment import image_from_metadata
from .registry import register_reward


@register_reward("toy_edit_verifier")
class ToyEditVerifierReward(Reward):
    """Strict (0/1) or partial credit of toy edits against their source (``metadata["image"]``) and edit
    (``metadata["spec"]``: an :class:`~rewards.toyedit.world.EditSpec` or its dict)."""

    name = "toy_edit_verifier"
    required_metadata = ("image", "spec")

    def __init__(self, mode: str = "strict") -> None:
        if mode not in ("strict", "partial"):
            raise ValueError(f"toy_edit_verifier mode must be 'strict' or 'partial', got {mode!r}")
        self.mode = mode

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        edits = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        info: dict[str, list] = {"strict": [], "partial": [], "reason": []}
        for i, (edit, meta) in enumerate(zip(edits, metadata, strict=True)):
            spec = as_edit_spec(meta["spec"], i)
            source = image_from_metadata(meta["image"], "source", i).permute(1, 2, 0).numpy()
            v = verify_edit(source, edit, spec)
            info["strict"].append(v.strict)
            info["partial"].append(v.partial)
            info["reason"].append(v.reason)
        return RewardOutput(torch.tensor(info[self.mode], dtype=torch.float32), info)
