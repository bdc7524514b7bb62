"""The toy world's GenEval-style verifier as a reward."""

from __future__ import annotations

import torch

from rewards.toyworld.prompts import spec_from_prompt
from rewards.toyworld.verifier import verify
from rewards.toyworld.world import PromptSpec

from .base import Reward, RewardOutput
from .registry import register_reward


@register_reward("toy_verifier")
class ToyVerifierReward(Reward):
    """Strict (0/1) or partial-credit verifier score of toy scenes.

    The spec comes from ``metadata["spec"]`` (a :class:`PromptSpec` or its dict) when present,
    otherwise from the prompt text.
    """

    def __init__(self, mode: str = "strict") -> None:
        if mode not in ("strict", "partial"):
            raise ValueError(f"toy_verifier mode must be 'strict' or 'partial', got {mode!r}")
        self.mode = mode

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        arrays = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        strict, partial, reasons = [], [], []
        for image, prompt, meta in zip(arrays, prompts, metadata, strict=True):
            spec = meta.get("spec")
            spec = PromptSpec.from_dict(spec) if isinstance(spec, dict) else spec or spec_from_prompt(prompt)
            v = verify(image, spec)
            strict.append(v.strict)
            partial.append(v.partial)
            reasons.append(v.reason)
        scores = torch.tensor(strict if self.mode == "strict" else partial, dtype=torch.float32)
        return RewardOutput(scores, {"strict": strict, "partial": partial, "reason": reasons})
