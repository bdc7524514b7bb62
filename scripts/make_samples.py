"""Regenerate the PNGs in samples/ that the README shows.

    python scripts/make_samples.py
    python scripts/make_samples.py --run outputs/toy-flow-grpo     # also the before/after of a training run

Writes samples/renderer_scenes.png (ground-truth scenes of test prompts, verifier-annotated)
and samples/toy_pipeline_test.png (the shipped toy pipeline on the same prompts, deterministic).
With ``--run``: samples/flow_grpo_before.png and flow_grpo_after.png (the base pipeline and the run's
merged pipeline on the same held-out prompts and seeds), samples/flow_grpo_reward_curve.png and
samples/flow_grpo_held_out_curve.png (held-out strict accuracy against images and minutes, the base dashed).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

import numpy as np

from genrl.grid import make_grid, save_image_atomically
from rewards.toyworld.prompts import split
from rewards.toyworld.render import render
from rewards.toyworld.verifier import verify

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def pick_prompts(n_per_family: int = 2):
    """A fixed handful of test prompts, two per family."""
    by_family: dict[str, list] = {}
    for spec in split("test"):
        by_family.setdefault(spec.family, []).append(spec)
    return [s for specs in by_family.values() for s in specs[:n_per_family]]


def annotated(images: np.ndarray, specs) -> list[str]:
    verdicts = [verify(im, s) for im, s in zip(images, specs, strict=True)]
    return [f"[{'ok' if v.strict else 'x'} {v.partial:.2f}] {s.prompt.removeprefix('a photo of ')}"
            for v, s in zip(verdicts, specs, strict=True)]


def before_after(run: Path, specs) -> None:
    """Base vs trained pipeline on the same held-out prompts and seeds, and the run's reward curve.

    The trained pipeline is the run's ``final/pipeline`` when it was exported merged, otherwise the
    toy pipeline with ``final/lora`` loaded.
    """
    from genrl.models.loading import load_pipeline
    from genrl.toy.evaluate import generate

    prompts, seeds = [s.prompt for s in specs], list(range(len(specs)))
    for name in ("before", "after"):
        merged = run / "final" / "pipeline"
        if name == "before":
            pipe = load_pipeline("toy")
        else:
            pipe = load_pipeline(merged) if merged.is_dir() else load_pipeline("toy", lora=run / "final" / "lora")
        pipe.set_progress_bar_config(disable=True)
        images = generate(pipe, prompts, seeds)
        save_image_atomically(make_grid(images, annotated(images, specs), columns=6, cell=96),
                              SAMPLES / f"flow_grpo_{name}.png")
    shutil.copyfile(run / "reward_curve.png", SAMPLES / "flow_grpo_reward_curve.png")
    from genrl.trainer.metrics import MetricsLog, held_out_curve_figure, save_figure

    records = MetricsLog(run / "metrics.jsonl").records()
    title = "held-out strict accuracy (family mean, in-run evaluation) against images and minutes"
    save_figure(held_out_curve_figure(records, "eval/strict/family_mean", title=title),
                SAMPLES / "flow_grpo_held_out_curve.png")


def run_problem(run: Path) -> str | None:
    """What a ``--run`` directory lacks for :func:`before_after`, or None."""
    final = run / "final"
    if not run.is_dir():
        return f"run directory not found: {run}"
    if not (final / "pipeline").is_dir() and not (final / "lora").is_dir():
        return f"{run} has no final/pipeline or final/lora (is the run finished?)"
    for name in ("reward_curve.png", "metrics.jsonl"):
        if not (run / name).is_file():
            return f"{run} has no {name}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="output_dir of a finished toy training run")
    args = parser.parse_args(argv)
    problem = run_problem(args.run) if args.run is not None else None
    if problem:  # checked before the pipeline loads and before any sample is rewritten
        parser.error(f"--run: {problem}")
    from genrl.toy.evaluate import generate
    from genrl.toy.pipeline import load_toy_pipeline

    specs = pick_prompts()
    rng = random.Random(0)
    truth = np.stack([render(s, rng)[0] for s in specs])
    save_image_atomically(make_grid(truth, annotated(truth, specs), columns=6, cell=96),
                          SAMPLES / "renderer_scenes.png")
    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    images = generate(pipe, [s.prompt for s in specs], list(range(len(specs))))
    save_image_atomically(make_grid(images, annotated(images, specs), columns=6, cell=96),
                          SAMPLES / "toy_pipeline_test.png")
    print(f"wrote {SAMPLES}/renderer_scenes.png and toy_pipeline_test.png")
    if args.run is not None:
        before_after(args.run, pick_prompts(3))
        print(f"wrote {SAMPLES}/flow_grpo_before.png, flow_grpo_after.png, flow_grpo_reward_curve.png "
              "and flow_grpo_held_out_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
