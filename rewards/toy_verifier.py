"""The toy world's GenEval-style verifier as a reward."""

from __future__ import annotations

import torch

from rewards.toyworld.prompts import spec_from_prompt
from rewards.toyworld.verifier import SOFT_SHAPE_TEMPERATURE, soft_score, verify
from rewards.toyworld.world import PromptSpec

from .base import Reward, RewardOutput
from .registry import register_reward

MODES = ("strict", "partial", "soft")


@register_reward("toy_verifier")
class ToyVerifierReward(Reward):
    """Strict (0/1), partial-credit or soft (dense partial credit, :func:`rewards.toyworld.verifier.soft_score`,
    with ``temperature`` its shape softmax's) verifier score of toy scenes.

    The spec comes from ``metadata["spec"]`` (a :class:`PromptSpec` or its dict) when present,
    otherwise from the prompt text.
    """

    def __init__(self, mode: str = "strict", temperature: float = SOFT_SHAPE_TEMPERATURE) -> None:
        if mode not in MODES:
            raise ValueError(f"toy_verifier mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        if not temperature > 0:
            raise ValueError(f"toy_verifier temperature (the soft mode's shape softmax) must be > 0, got {temperature}")
        self.mode, self.temperature = mode, temperature

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        arrays = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        strict, partial, soft, reasons = [], [], [], []  # soft credit only in its mode: it is not free
        for image, prompt, meta in zip(arrays, prompts, metadata, strict=True):
            spec = meta.get("spec")
            spec = PromptSpec.from_dict(spec) if isinstance(spec, dict) else spec or spec_from_prompt(prompt)
            v = verify(image, spec)
            strict.append(v.strict)
            partial.append(v.partial)
            if self.mode == "soft":
                soft.append(soft_score(spec, list(v.detections), self.temperature))
            reasons.append(v.reason)
        info = {"strict": strict, "partial": partial, "reason": reasons} | ({"soft": soft} if self.mode == "soft" else {})
        return RewardOutput(torch.tensor(info[self.mode], dtype=torch.float32), info)
