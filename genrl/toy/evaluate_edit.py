"""Per-family verifier accuracy of an image-editing pipeline on the toy edit world's held-out edits.

Usage::

    python -m genrl.toy.evaluate_edit                      # the shipped toy edit pipeline
    python -m genrl.toy.evaluate_edit --model DIR --lora RUN/final/lora --images-per-edit 4
    python -m genrl.toy.evaluate_edit --images-per-edit 16 --per-edit     # also each held-out edit's success rate

Each edit is sampled ``images_per_edit`` times with the stock ``FluxKontextPipeline`` call (deterministic
Euler; image ``j`` of edit ``i`` uses seed ``seed + i * images_per_edit + j``); a family's accuracy is the mean
over its images and the overall score the mean over families, as for the image world.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from rewards.toyedit.splits import SPLIT_SIZES, edit_split
from rewards.toyedit.verifier import verify_edit
from rewards.toyedit.world import EDIT_FAMILIES, EditSpec, render_pair

from .edit_pipeline import stock_edit_call_kwargs
from .evaluate import EvalReport, report


def generate_edits(pipe, specs: Sequence[EditSpec], seeds: Sequence[int], *, batch_size: int = 64,
                   **call_kwargs) -> np.ndarray:
    """One edit per (spec, seed) with the stock pipeline call; ``(N, H, W, 3)`` floats in [0, 1]."""
    import torch
    from PIL import Image

    if len(specs) != len(seeds):
        raise ValueError(f"got {len(specs)} edits but {len(seeds)} seeds")
    kwargs = {**stock_edit_call_kwargs(), **call_kwargs}
    images = []
    for start in range(0, len(specs), batch_size):
        chunk = list(specs[start:start + batch_size])
        sources = [Image.fromarray(render_pair(s)[0]) for s in chunk]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + batch_size]]
        out = pipe(image=sources, prompt=[s.instruction for s in chunk], generator=generators, output_type="np", **kwargs)
        images.append(out.images)
    return np.concatenate(images)


def score_edits(images: np.ndarray, specs: Sequence[EditSpec]) -> EvalReport:
    """Verify each edit against its rendered source and instruction, aggregated per family."""
    verdicts = [verify_edit(render_pair(spec)[0], image, spec) for image, spec in zip(images, specs, strict=True)]
    return report(verdicts, [s.family for s in specs], EDIT_FAMILIES)


def evaluate_edit_pipeline(pipe, specs: Sequence[EditSpec] | None = None, *, images_per_edit: int = 4, seed: int = 0,
                           progress: bool = False, **call_kwargs) -> EvalReport:
    """Edit each spec's source ``images_per_edit`` times (default: the held-out split) and score the edits."""
    specs = list(specs if specs is not None else edit_split("test"))
    expanded = [s for s in specs for _ in range(images_per_edit)]
    pipe.set_progress_bar_config(disable=not progress)
    images = generate_edits(pipe, expanded, [seed + i for i in range(len(expanded))], **call_kwargs)
    return score_edits(images, expanded)


def per_edit_table(report: EvalReport, specs: Sequence[EditSpec], images_per_edit: int) -> str:
    """A Markdown table of each edit's strict success rate over its ``images_per_edit`` images (``report`` from
    :func:`evaluate_edit_pipeline` on ``specs``): which held-out edits a model never, sometimes or always gets right."""
    if len(report.verdicts) != len(specs) * images_per_edit:
        raise ValueError(f"the report holds {len(report.verdicts)} verdicts, not {len(specs)} edits x {images_per_edit}")
    rows = ["| edit | family | instruction | strict |", "|---|---|---|---|"]
    for i, spec in enumerate(specs):
        verdicts = report.verdicts[i * images_per_edit:(i + 1) * images_per_edit]
        rows.append(f"| {i} | {spec.family} | {spec.instruction} | {np.mean([v.strict for v in verdicts]):.2f} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints the per-family table (and optionally writes JSON)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a Kontext pipeline dir or hub id (default: the shipped toy one)")
    parser.add_argument("--lora", default=None, help="a LoRA directory to load on top (e.g. a run's final/lora)")
    parser.add_argument("--split", default="test", choices=list(SPLIT_SIZES))
    parser.add_argument("--images-per-edit", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the toy's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    parser.add_argument("--per-edit", action="store_true", help="also print each edit's strict success rate")
    args = parser.parse_args(argv)
    if args.images_per_edit < 1:
        parser.error(f"--images-per-edit must be >= 1, got {args.images_per_edit}")

    from genrl.models.loading import load_pipeline

    from .edit_pipeline import TOY_EDIT_PIPELINE_DIR

    pipe = load_pipeline(args.model or str(TOY_EDIT_PIPELINE_DIR), lora=args.lora)
    extra = {} if args.steps is None else {"num_inference_steps": args.steps}
    specs = edit_split(args.split)
    report = evaluate_edit_pipeline(pipe, specs, images_per_edit=args.images_per_edit, seed=args.seed, progress=True,
                                    **extra)
    if args.per_edit:
        print(per_edit_table(report, specs, args.images_per_edit) + "\n")
    print(report.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
