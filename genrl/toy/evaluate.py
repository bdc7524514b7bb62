"""Per-family verifier accuracy of a text-to-image pipeline on the toy test prompts.

Usage::

    python -m genrl.toy.evaluate                      # the shipped toy pipeline
    python -m genrl.toy.evaluate --model path/or/hub-id --images-per-prompt 4

Like GenEval, each prompt is sampled several times (deterministically: image ``j`` of prompt
``i`` uses seed ``seed + i * images_per_prompt + j``), a family's accuracy is the mean over its
images, and the overall score is the mean over families.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rewards.toyworld.prompts import SPLITS, split
from rewards.toyworld.verifier import Verdict, verify
from rewards.toyworld.world import FAMILIES, PromptSpec

from .pipeline import TOY_GUIDANCE_SCALE, TOY_MAX_SEQUENCE_LENGTH, TOY_NUM_INFERENCE_STEPS


@dataclass
class EvalReport:
    """Strict and partial accuracy per family, the GenEval-style overall score, and the raw verdicts."""

    strict: dict[str, float]
    partial: dict[str, float]
    overall_strict: float
    overall_partial: float
    num_images: int
    verdicts: list[Verdict] = field(default_factory=list, repr=False)

    def table(self) -> str:
        """A Markdown table of the scores."""
        rows = ["| family | strict | partial |", "|---|---|---|"]
        rows += [f"| {f} | {self.strict[f]:.3f} | {self.partial[f]:.3f} |" for f in self.strict]
        rows.append(f"| **overall** | **{self.overall_strict:.3f}** | **{self.overall_partial:.3f}** |")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        """Scores as a JSON-serialisable dict (without verdicts)."""
        return {"strict": self.strict, "partial": self.partial, "overall_strict": self.overall_strict,
                "overall_partial": self.overall_partial, "num_images": self.num_images}


def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], *, num_inference_steps: int = TOY_NUM_INFERENCE_STEPS,
             guidance_scale: float = TOY_GUIDANCE_SCALE, max_sequence_length: int | None = TOY_MAX_SEQUENCE_LENGTH,
             batch_size: int = 64) -> np.ndarray:
    """Sample one image per (prompt, seed) with the pipeline; returns ``(N, H, W, 3)`` floats in [0, 1].

    Each image has its own generator, so the result does not depend on ``batch_size``.
    ``max_sequence_length=None`` keeps the pipeline's own default (256 T5 tokens for SD3); 0 gives none.
    """
    import torch

    from genrl.models.sd3 import t5_tokens_dropped

    extra = {} if max_sequence_length is None else {"max_sequence_length": max_sequence_length}
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + batch_size]]
        with t5_tokens_dropped(pipe, max_sequence_length):
            out = pipe(chunk, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                       generator=generators, output_type="np", **extra)
        images.append(out.images)
    return np.concatenate(images)


def generate_with_adapter(adapter, prompts: Sequence[str], seeds: Sequence[int], num_inference_steps: int,
                          batch_size: int) -> list:
    """One sample per (prompt, seed) with a model adapter's deterministic sampler, each from its own generator (so
    the result does not depend on ``batch_size``): the media tensors of the batches, floats on the CPU."""
    import torch

    from genrl.generation import generate as generate_media

    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    sigmas = adapter.schedule(num_inference_steps)
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + batch_size]]
            media = generate_media(adapter, chunk, [{}] * len(chunk), sigmas=sigmas, noise_generators=generators).media
            out.append(media.tensor.float().cpu())
    return out


def evaluate_specs(specs: Sequence, per_prompt: int, seed: int, generate_fn, score_fn) -> EvalReport:
    """``score_fn(generate_fn(prompts, seeds), expanded specs)`` with ``per_prompt`` samples of each spec, sample
    ``j`` of spec ``i`` from seed ``seed + i * per_prompt + j``."""
    expanded = [s for s in specs for _ in range(per_prompt)]
    return score_fn(generate_fn([s.prompt for s in expanded], [seed + i for i in range(len(expanded))]), expanded)


def report(verdicts: Sequence[Verdict], families: Sequence[str], order: Sequence[str] = FAMILIES) -> EvalReport:
    """Aggregate verdicts per family (listed in ``order``) and over families, GenEval's way."""
    strict: dict[str, list[float]] = defaultdict(list)
    partial: dict[str, list[float]] = defaultdict(list)
    for v, family in zip(verdicts, families, strict=True):
        strict[family].append(v.strict)
        partial[family].append(v.partial)
    names = [f for f in order if f in strict]
    s = {f: float(np.mean(strict[f])) for f in names}
    p = {f: float(np.mean(partial[f])) for f in names}
    return EvalReport(s, p, float(np.mean(list(s.values()))), float(np.mean(list(p.values()))), len(verdicts),
                      list(verdicts))


def score(images: np.ndarray, specs: Sequence[PromptSpec]) -> EvalReport:
    """Verify each image against its spec and aggregate per family."""
    verdicts = [verify(image, spec) for image, spec in zip(images, specs, strict=True)]
    return report(verdicts, [s.family for s in specs])


def evaluate_pipeline(pipe, specs: Sequence[PromptSpec] | None = None, *, images_per_prompt: int = 4,
                      seed: int = 0, progress: bool = False, **generate_kwargs) -> EvalReport:
    """Generate ``images_per_prompt`` images for each spec (default: the toy test split) and score them."""
    specs = list(specs if specs is not None else split("test"))
    expanded = [s for s in specs for _ in range(images_per_prompt)]
    seeds = [seed + i for i in range(len(expanded))]
    pipe.set_progress_bar_config(disable=not progress)
    images = generate(pipe, [s.prompt for s in expanded], seeds, **generate_kwargs)
    return score(images, expanded)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints the per-family table (and optionally writes JSON)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="hub id or local pipeline dir (default: the shipped toy pipeline)")
    parser.add_argument("--lora", default=None, help="a LoRA directory to load on top (e.g. a run's final/lora)")
    parser.add_argument("--split", default="test", choices=list(SPLITS))
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--steps", type=int, default=TOY_NUM_INFERENCE_STEPS)
    parser.add_argument("--guidance", type=float, default=TOY_GUIDANCE_SCALE)
    parser.add_argument("--max-sequence-length", type=int, default=TOY_MAX_SEQUENCE_LENGTH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    problem = _argument_problem(args)
    if problem:  # before the pipeline loads (seconds to minutes), not after
        parser.error(problem)

    from genrl.models.loading import load_pipeline

    pipe = load_pipeline(args.model, lora=args.lora)
    report = evaluate_pipeline(pipe, split(args.split), images_per_prompt=args.images_per_prompt, seed=args.seed,
                               num_inference_steps=args.steps, guidance_scale=args.guidance,
                               max_sequence_length=args.max_sequence_length, progress=True)
    print(report.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2)
    return 0


def _argument_problem(args: argparse.Namespace, count_flag: str = "--images-per-prompt") -> str | None:
    """What is wrong with the command line's numbers, paths and directories, or None (``count_flag``: the option
    giving the samples per prompt)."""
    from pathlib import Path

    from genrl.config import local_pipeline_problem

    count = getattr(args, count_flag.lstrip("-").replace("-", "_"))
    if count < 1 or args.steps < 1:
        return f"{count_flag} and --steps must be >= 1, got {count} and {args.steps}"
    problem = local_pipeline_problem(args.model) if args.model is not None else None
    if problem:
        return f"--model {args.model!r}: {problem}"
    if args.lora is not None and not Path(args.lora).is_dir():
        return f"--lora {args.lora!r}: LoRA directory not found"
    if args.json and not Path(args.json).absolute().parent.is_dir():
        return f"--json {args.json!r}: directory {Path(args.json).absolute().parent} not found"
    return None


def clip_evaluation_main(argv: Sequence[str] | None, doc: str, *, default_model: str, splits: Sequence[str],
                         split, evaluate, steps: int, guidance: float) -> int:
    """The command line of a toy world whose samples are clips (audio, video): ``--model``, ``--lora``,
    ``--split``, ``--clips-per-prompt``, ``--steps``, ``--guidance``, ``--seed``, ``--json``; ``evaluate(pipe,
    specs, clips_per_prompt=, seed=, num_inference_steps=, guidance_scale=)`` returns the report it prints."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model, help="hub id or local pipeline dir (default: the shipped "
                                                               "toy pipeline)")
    parser.add_argument("--lora", default=None, help="a LoRA directory to load on top (e.g. a run's final/lora)")
    parser.add_argument("--split", default="test", choices=list(splits))
    parser.add_argument("--clips-per-prompt", type=int, default=4)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--guidance", type=float, default=guidance)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    problem = _argument_problem(args, count_flag="--clips-per-prompt")
    if problem:
        parser.error(problem)

    from genrl.models.loading import load_pipeline

    pipe = load_pipeline(args.model, lora=args.lora)
    pipe.set_progress_bar_config(disable=True)
    result = evaluate(pipe, split(args.split), clips_per_prompt=args.clips_per_prompt, seed=args.seed,
                      num_inference_steps=args.steps, guidance_scale=args.guidance)
    print(result.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
