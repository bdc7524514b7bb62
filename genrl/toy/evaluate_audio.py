"""Per-family verifier accuracy of a text-to-audio pipeline on the toy audio test prompts.

Usage::

    python -m genrl.toy.evaluate_audio                         # the shipped toy audio pipeline
    python -m genrl.toy.evaluate_audio --lora RUN/final/lora --clips-per-prompt 16

Clips are sampled as genrl's evaluation samples them: the Stable Audio adapter's deterministic sampler (DDIM with
eta 0 on the scheduler's sigmas, the first-order probability-flow solver) with classifier-free guidance; clip
``j`` of prompt ``i`` starts from seed ``seed + i * clips_per_prompt + j``. A family's accuracy is the mean over
its clips, the overall score the mean over families (GenEval's way, as the image world's).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from rewards.toyaudio.prompts import SPLITS, split
from rewards.toyaudio.verifier import verify
from rewards.toyaudio.world import FAMILIES, AudioSpec

from .audio_pipeline import TOY_AUDIO_GUIDANCE_SCALE, TOY_AUDIO_NUM_INFERENCE_STEPS
from .evaluate import EvalReport, clip_evaluation_main, evaluate_specs, generate_with_adapter, report


def generate_clips(pipe, prompts: Sequence[str], seeds: Sequence[int], *,
                   num_inference_steps: int = TOY_AUDIO_NUM_INFERENCE_STEPS,
                   guidance_scale: float = TOY_AUDIO_GUIDANCE_SCALE, batch_size: int = 64) -> np.ndarray:
    """One mono clip per (prompt, seed) with the deterministic sampler; ``(N, samples)`` floats in [-1, 1].
    Each clip has its own generator, so the result does not depend on ``batch_size``."""
    from genrl.models.base import build_adapter

    adapter = build_adapter("stable_audio", pipe, guidance_scale=guidance_scale)
    return np.concatenate([t.mean(dim=1).numpy() for t in generate_with_adapter(adapter, prompts, seeds,
                                                                                num_inference_steps, batch_size)])


def score_clips(clips: np.ndarray, specs: Sequence[AudioSpec]) -> EvalReport:
    """Verify each clip against its spec and aggregate per family."""
    verdicts = [verify(clip, spec) for clip, spec in zip(clips, specs, strict=True)]
    return report(verdicts, [s.family for s in specs], order=FAMILIES)


def evaluate_audio_pipeline(pipe, specs: Sequence[AudioSpec] | None = None, *, clips_per_prompt: int = 4,
                            seed: int = 0, **generate_kwargs) -> EvalReport:
    """Generate ``clips_per_prompt`` clips for each spec (default: the toy audio test split) and score them."""
    return evaluate_specs(list(specs if specs is not None else split("test")), clips_per_prompt, seed,
                          lambda prompts, seeds: generate_clips(pipe, prompts, seeds, **generate_kwargs), score_clips)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints the per-family table (and optionally writes JSON)."""
    return clip_evaluation_main(argv, __doc__, default_model="toy_audio", splits=SPLITS, split=split,
                                evaluate=evaluate_audio_pipeline, steps=TOY_AUDIO_NUM_INFERENCE_STEPS,
                                guidance=TOY_AUDIO_GUIDANCE_SCALE)


if __name__ == "__main__":
    sys.exit(main())
