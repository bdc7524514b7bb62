"""The toy video world's learnability gates, measured on a base video pipeline before any RL.

    python bench/toy_video_gates.py                              # the shipped toy video pipeline, held-out prompts
    python bench/toy_video_gates.py --model /tmp/video/wan-toy --samples 16 --json gates.json

1. **It draws and moves everything the prompts name**: deterministic-sampler strict accuracy of the ``direction``
   family per shape, per colour and per direction, and of the ``still`` family per shape, on every prompt of those
   families (``--single-clips`` each), then the README's standard evaluation (``--clips-per-prompt`` per held-out
   prompt) per family with the verifier's first failed check counted by kind.
2. **Its errors are stochastic**: every held-out prompt is sampled ``--samples`` times with the *training*
   sampler of ``--config`` (independent initial noise per sample); per family, the mean per-prompt success p,
   the share of prompts with p = 0, 0 < p < 1 and p = 1, and pass@k.

The third gate is ``bench/gradient_snr.py --config configs/toy_video.yaml``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("toy_gates", ROOT / "bench" / "toy_gates.py")
toy_gates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy_gates)


def failure_kind(reason: str) -> str:
    """The kind of the verifier's first failed check: ``object`` (not there in every frame), ``extra`` (other
    objects), or the motion the prompt asks for (``direction``, ``speed``, ``still``, ``apart``)."""
    if reason.endswith("in every frame"):
        return "object"
    if reason == "not: nothing else":
        return "extra"
    if reason.endswith(("slowly", "quickly")):
        return "speed"
    if reason.endswith(("apart", "together")):
        return "apart"
    return "still" if reason.endswith("standing still") else "direction"


def every_prompt_singles(pipe, single_clips: int) -> dict[str, dict[str, float]]:
    """Deterministic-sampler strict accuracy of one moving object (per shape, colour, direction) and of one still
    object (per shape), on every prompt of the two families."""
    from genrl.toy.evaluate_video import evaluate_video_pipeline
    from rewards.toyvideo.prompts import all_specs

    specs = [s for family in ("direction", "still") for s in all_specs()[family]]

    def evaluate(chosen):
        return evaluate_video_pipeline(pipe, chosen, clips_per_prompt=single_clips, seed=50_000)

    out = toy_gates.attribute_accuracy(evaluate, specs, single_clips, {"still": lambda s: s.objects[0].shape})
    for name, of in (("shape", lambda s: s.objects[0].shape), ("colour", lambda s: s.objects[0].color),
                     ("direction", lambda s: s.direction)):
        out[f"direction by {name}"] = toy_gates.attribute_accuracy(evaluate, specs, single_clips,
                                                                   {"direction": of})["direction"]
    return out


def evaluate_specs(pipe, specs, clips_per_prompt: int):
    """The standard evaluation of ``specs`` (the split's prompts)."""
    from genrl.toy.evaluate_video import evaluate_video_pipeline

    return evaluate_video_pipeline(pipe, specs, clips_per_prompt=clips_per_prompt)


def video_strict(media, meta: dict) -> list[float]:
    """The video verifier's strict verdicts of one prompt's clips."""
    from rewards.toyvideo.verifier import verify_clip

    return [verify_clip(clip, meta["spec"]).strict for clip in media.tensor.numpy()]


def main(argv: list[str]) -> int:
    return toy_gates.clip_world_gates_main(
        argv, __doc__, config=str(ROOT / "configs" / "toy_video.yaml"), prefix="toyvideo", singles=every_prompt_singles,
        evaluate=evaluate_specs, failure_kind=failure_kind, strict_of=video_strict)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
