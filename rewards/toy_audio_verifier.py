"""The toy audio world's analytic verifier as a reward (``toy_audio_verifier``)."""

from __future__ import annotations

import torch

from rewards.toyaudio.prompts import spec_from_prompt
from rewards.toyaudio.verifier import verify
from rewards.toyaudio.world import NUM_SAMPLES, SAMPLE_RATE, AudioSpec

from .base import Reward, RewardOutput
from .registry import register_reward


@register_reward("toy_audio_verifier")
class ToyAudioVerifierReward(Reward):
    """Strict (0/1) or partial-credit verifier score of toy audio clips (mono, 8 kHz, one second).

    The spec comes from ``metadata["spec"]`` (an :class:`AudioSpec` or its dict) when present, otherwise from the
    prompt text. A clip with NaN or infinite samples scores NaN (the trainer leaves such samples out, naming the
    reward); a clip of another length is a ``ValueError`` naming both lengths.
    """

    modality = "audio"
    sample_rate = SAMPLE_RATE

    def __init__(self, mode: str = "strict") -> None:
        if mode not in ("strict", "partial"):
            raise ValueError(f"toy_audio_verifier mode must be 'strict' or 'partial', got {mode!r}")
        self.mode = mode

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        clips = images.detach().float().cpu()
        if clips.shape[-1] != NUM_SAMPLES:
            raise ValueError(f"reward 'toy_audio_verifier' scores clips of {NUM_SAMPLES} samples ({SAMPLE_RATE} Hz, "
                             f"one second); got {clips.shape[-1]}")
        strict, partial, reasons = [], [], []
        for clip, prompt, meta in zip(clips.numpy(), prompts, metadata, strict=True):
            if not torch.isfinite(torch.from_numpy(clip)).all():
                strict.append(float("nan"))
                partial.append(float("nan"))
                reasons.append("non-finite samples")
                continue
            spec = meta.get("spec")
            spec = AudioSpec.from_dict(spec) if isinstance(spec, dict) else spec or spec_from_prompt(prompt)
            v = verify(clip, spec)
            strict.append(v.strict)
            partial.append(v.partial)
            reasons.append(v.reason)
        scores = torch.tensor(strict if self.mode == "strict" else partial, dtype=torch.float32)
        return RewardOutput(scores, {"strict": strict, "partial": partial, "reason": reasons})
