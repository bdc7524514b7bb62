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

import argparse
import importlib.util
import json
import re
import sys
from collections import Counter
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toy_audio.yaml"),
                        help="its sampler is the training sampler")
    parser.add_argument("--model", default=None, help="pipeline directory (default: the config's model.pretrained)")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--samples", type=int, default=16, help="training-sampler samples per prompt")
    parser.add_argument("--clips-per-prompt", type=int, default=4, help="deterministic evaluation, per prompt")
    parser.add_argument("--single-clips", type=int, default=8, help="deterministic clips per single-attribute prompt")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)
    if min(args.samples, args.clips_per_prompt, args.single_clips) < 1:
        parser.error("--samples, --clips-per-prompt and --single-clips must be >= 1")
    with toy_gates.gates_trainer(args.config, args.overrides, args.model, f"toyaudio:{args.split}") as trainer:
        import torch

        from genrl.toy.evaluate_audio import evaluate_audio_pipeline
        from rewards.toyaudio.prompts import all_specs, split

        pipe = trainer.models.pipe
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            singles = single_attribute_gate(pipe, [s for specs in all_specs().values() for s in specs],
                                            args.single_clips)
            report = evaluate_audio_pipeline(pipe, split(args.split), clips_per_prompt=args.clips_per_prompt)
        failures = Counter(failure_kind(v.reason) for v in report.verdicts if not v.strict)
        rows = toy_gates.training_sampler_success(trainer, args.samples, audio_strict)
    table = toy_gates.success_table(rows, args.samples)
    print(f"## Single attributes ({args.single_clips} clips per prompt, every prompt of the family)")
    for family, scores in singles.items():
        print(f"{family}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    print(f"\n## Standard evaluation ({args.clips_per_prompt} clips per prompt, split {args.split})")
    print(report.table())
    print("first failed check: " + ", ".join(f"{k} {n}" for k, n in failures.most_common()))
    print(f"\n## Training sampler, {args.samples} samples per prompt")
    print(toy_gates._markdown(table))
    if args.json:
        args.json.write_text(json.dumps({"single_attributes": singles, "standard": report.to_dict(),
                                         "failures": dict(failures), "per_prompt": rows, "success": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
