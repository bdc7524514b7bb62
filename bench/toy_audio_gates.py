"""The toy audio world's learnability gates, measured on a base audio pipeline before any RL.

    python bench/toy_audio_gates.py                              # the shipped toy audio pipeline, held-out prompts
    python bench/toy_audio_gates.py --model /tmp/audio/stable-audio-toy --samples 16 --json gates.json

1. **It plays everything the prompts name**: deterministic-sampler strict accuracy of single notes per timbre
   (sine, square, plucked, drum) and of the register family per register, on every prompt of those families
   (``--single-clips`` each), then the README's standard evaluation (``--clips-per-prompt`` per held-out
   prompt) per family with the verifier's first failed check counted by kind.
2. **Its errors are stochastic**: every held-out prompt is sampled ``--samples`` times with the *training*
   sampler of ``--config`` (independent initial noise per sample); per family, the mean per-prompt success p,
   the share of prompts with p = 0, 0 < p < 1 and p = 1, and pass@k.

The third gate is ``bench/gradient_snr.py --config configs/toy_audio.yaml``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("toy_gates", ROOT / "bench" / "toy_gates.py")
toy_gates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy_gates)


def failure_kind(reason: str) -> str:
    """The kind of the verifier's first failed check: ``count``, ``timbre``, ``register``, ``chord``,
    ``contour`` or ``only`` (counting: another kind of event among the hits)."""
    if reason.startswith("expected only"):
        return "only"
    if reason.startswith("expected the notes"):
        return "contour"
    if re.match(r"expected \d+ events", reason):
        return "count"
    if "register" in reason:
        return "register"
    if "chord" in reason or "single note" in reason:
        return "chord"
    if "missing" in reason:
        return "count"
    return "timbre"


def single_attribute_gate(pipe, specs, clips_per_prompt: int) -> dict[str, dict[str, float]]:
    """Deterministic-sampler strict accuracy of single notes per timbre and of the register family per register."""
    from genrl.toy.evaluate_audio import evaluate_audio_pipeline

    return toy_gates.attribute_accuracy(
        lambda chosen: evaluate_audio_pipeline(pipe, chosen, clips_per_prompt=clips_per_prompt, seed=50_000), specs,
        clips_per_prompt, {"single_note": lambda s: s.events[0].timbre, "register": lambda s: s.events[0].register})


def audio_strict(media, meta: dict) -> list[float]:
    """The audio verifier's strict verdicts of one prompt's clips (channels averaged)."""
    from rewards.toyaudio.verifier import verify

    return [verify(clip, meta["spec"]).strict for clip in media.tensor.mean(dim=1).numpy()]


def evaluate_specs(pipe, specs, clips_per_prompt: int):
    """The standard evaluation of ``specs`` (the split's prompts)."""
    from genrl.toy.evaluate_audio import evaluate_audio_pipeline

    return evaluate_audio_pipeline(pipe, specs, clips_per_prompt=clips_per_prompt)


def every_prompt_singles(pipe, single_clips: int) -> dict[str, dict[str, float]]:
    from rewards.toyaudio.prompts import all_specs

    return single_attribute_gate(pipe, [s for specs in all_specs().values() for s in specs], single_clips)


def main(argv: list[str]) -> int:
    return toy_gates.clip_world_gates_main(
        argv, __doc__, config=str(ROOT / "configs" / "toy_audio.yaml"), prefix="toyaudio", singles=every_prompt_singles,
        evaluate=evaluate_specs, failure_kind=failure_kind, strict_of=audio_strict)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
