"""Per-family verifier accuracy of a text-to-video pipeline on the toy video test prompts.

Usage::

    python -m genrl.toy.evaluate_video                         # the shipped toy video pipeline
    python -m genrl.toy.evaluate_video --lora RUN/final/lora --clips-per-prompt 8

Clips are sampled as genrl's evaluation samples them: the Wan adapter's deterministic sampler (Euler on the
scheduler's flow sigmas) with classifier-free guidance; clip ``j`` of prompt ``i`` starts from seed
``seed + i * clips_per_prompt + j``. A family's accuracy is the mean over its clips, the overall score the mean
over families (GenEval's way, as the image world's).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from rewards.toyvideo.prompts import SPLITS, split
from rewards.toyvideo.verifier import verify_clip
from rewards.toyvideo.world import VIDEO_FAMILIES, VideoSpec

from .evaluate import EvalReport, clip_evaluation_main, evaluate_specs, generate_with_adapter, report
from .video_pipeline import TOY_VIDEO_GUIDANCE_SCALE, TOY_VIDEO_NUM_INFERENCE_STEPS, adapter_options


def generate_videos(pipe, prompts: Sequence[str], seeds: Sequence[int], *,
                    num_inference_steps: int = TOY_VIDEO_NUM_INFERENCE_STEPS,
                    guidance_scale: float = TOY_VIDEO_GUIDANCE_SCALE, batch_size: int = 32) -> np.ndarray:
    """One clip per (prompt, seed) with the deterministic sampler; ``(N, frames, 3, H, W)`` floats in [0, 1].
    Each clip has its own generator, so the result does not depend on ``batch_size``."""
    from genrl.models.base import build_adapter

    adapter = build_adapter("wan", pipe, **{**adapter_options(), "guidance_scale": guidance_scale})
    return np.concatenate([t.numpy() for t in generate_with_adapter(adapter, prompts, seeds, num_inference_steps,
                                                                     batch_size)])


def score_videos(clips: np.ndarray, specs: Sequence[VideoSpec]) -> EvalReport:
    """Verify each clip against its spec and aggregate per family."""
    verdicts = [verify_clip(clip, spec) for clip, spec in zip(clips, specs, strict=True)]
    return report(verdicts, [s.family for s in specs], order=VIDEO_FAMILIES)


def evaluate_video_pipeline(pipe, specs: Sequence[VideoSpec] | None = None, *, clips_per_prompt: int = 4,
                            seed: int = 0, **generate_kwargs) -> EvalReport:
    """Generate ``clips_per_prompt`` clips for each spec (default: the toy video test split) and score them."""
    return evaluate_specs(list(specs if specs is not None else split("test")), clips_per_prompt, seed,
                          lambda prompts, seeds: generate_videos(pipe, prompts, seeds, **generate_kwargs), score_videos)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints the per-family table (and optionally writes JSON)."""
    return clip_evaluation_main(argv, __doc__, default_model="toy_video", splits=SPLITS, split=split,
                                evaluate=evaluate_video_pipeline, steps=TOY_VIDEO_NUM_INFERENCE_STEPS,
                                guidance=TOY_VIDEO_GUIDANCE_SCALE)


if __name__ == "__main__":
    sys.exit(main())
