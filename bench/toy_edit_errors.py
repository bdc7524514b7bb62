"""What a toy edit pipeline's edits get wrong, object by object, per edit family.

    python bench/toy_edit_errors.py                                        # the shipped pipeline, held-out edits
    python bench/toy_edit_errors.py --lora RUN/final/lora --family swap --images-per-edit 8

Every image of the standard evaluation (the stock sampler, seeds 0, 1, ...) is read by the toy detector, and
each object of the edit's *target* scene is classed by what stands at its target centre (a detection centred
within the edit verifier's position tolerance in x and in y, a square window slightly wider than the verifier's
circle): drawn right; the right colour but the shape of another object of the scene (leaked) or some other
shape; the right shape but its colour before the edit (old: a recolour not made), the colour of another object
of the scene (leaked) or some other colour; the right shape and colour elsewhere (misplaced); missing. The table
counts those outcomes over the objects of the images the edit verifier fails (strict), so it says whether a
family fails by placement or a skipped edit (what noisy pretraining data teaches and RL removes) or by an
attribute leaking between objects (a binding capability the model lacks).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rewards.toyedit.verifier import POSITION_TOLERANCE
from rewards.toyedit.world import EDIT_FAMILIES, EditSpec, PlacedObject
from rewards.toyworld.verifier import Detection

#: Outcomes of one target object, in the order they are tested.
OUTCOMES = ("right", "leaked shape", "other shape", "old colour", "leaked colour", "other colour", "misplaced",
            "missing")


def object_outcome(detections: Sequence[Detection], obj: PlacedObject, scene: Sequence[PlacedObject] = (),
                   old_color: str | None = None) -> str:
    """What the detections show of target object ``obj`` (one of :data:`OUTCOMES`).

    ``scene`` holds the target's other objects (whose shapes and colours count as leaked) and ``old_color``
    the object's colour in the source, where the edit changes it.
    """
    cx, cy = obj.center
    near = [d for d in detections
            if abs(d.center[0] - cx) <= POSITION_TOLERANCE and abs(d.center[1] - cy) <= POSITION_TOLERANCE]
    others = [o for o in scene if o is not obj]
    if any(d.shape == obj.shape and d.color == obj.color for d in near):
        return "right"
    shapes = {d.shape for d in near if d.color == obj.color}
    if shapes:
        return "leaked shape" if shapes & {o.shape for o in others} else "other shape"
    colors = {d.color for d in near if d.shape == obj.shape}
    if colors:
        if old_color is not None and old_color != obj.color and old_color in colors:
            return "old colour"
        return "leaked colour" if colors & {o.color for o in others} else "other colour"
    if any(d.shape == obj.shape and d.color == obj.color for d in detections):
        return "misplaced"
    return "missing"


def target_outcomes(detections: Sequence[Detection], spec: EditSpec) -> list[str]:
    """:func:`object_outcome` of each object of ``spec``'s target scene, in the target's order."""
    target = spec.target_objects()  # in the source's order
    return [object_outcome(detections, obj, target, before.color) for obj, before in zip(target, spec.objects, strict=True)]


def error_table(images, specs: Sequence[EditSpec]) -> dict[str, dict]:
    """Per family: images, strict failures, and the outcome counts of the failed images' target objects."""
    from rewards.toyedit.verifier import verify_edit
    from rewards.toyedit.world import render_pair

    table: dict[str, dict] = {}
    for image, spec in zip(images, specs, strict=True):
        row = table.setdefault(spec.family, {"images": 0, "failed": 0, "outcomes": Counter()})
        row["images"] += 1
        verdict = verify_edit(render_pair(spec)[0], image, spec)
        if verdict.strict:
            continue
        row["failed"] += 1  # the verdict carries the edit's detections: the image is read once
        row["outcomes"].update(target_outcomes(verdict.detections, spec))
    return {f: table[f] for f in EDIT_FAMILIES if f in table}


def markdown(table: dict[str, dict]) -> str:
    """The table as markdown: one row per family, outcome counts over the failed images' target objects."""
    lines = ["| family | images | failed | " + " | ".join(OUTCOMES) + " |", "|---" * (3 + len(OUTCOMES)) + "|"]
    for family, row in table.items():
        lines.append(f"| {family} | {row['images']} | {row['failed']} | "
                     + " | ".join(str(row["outcomes"][o]) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a Kontext pipeline directory (default: the shipped toy one)")
    parser.add_argument("--lora", default=None, help="a LoRA directory to load on top (e.g. a run's final/lora)")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--family", default=",".join(EDIT_FAMILIES), help="comma-separated edit families")
    parser.add_argument("--images-per-edit", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    families = [f for f in args.family.split(",") if f]
    unknown = sorted(set(families) - set(EDIT_FAMILIES))
    if unknown:
        parser.error(f"--family names unknown edit family {unknown[0]!r}; families: {', '.join(EDIT_FAMILIES)}")
    if args.images_per_edit < 1:
        parser.error("--images-per-edit must be >= 1")

    import torch

    from genrl.models.loading import load_pipeline
    from genrl.toy.edit_pipeline import TOY_EDIT_PIPELINE_DIR
    from genrl.toy.evaluate_edit import generate_edits
    from rewards.toyedit.splits import edit_split

    pipe = load_pipeline(args.model or str(TOY_EDIT_PIPELINE_DIR), lora=args.lora)
    pipe.set_progress_bar_config(disable=True)
    specs = [s for s in edit_split(args.split) if s.family in families for _ in range(args.images_per_edit)]
    with torch.no_grad():
        images = generate_edits(pipe, specs, list(range(len(specs))))
    table = error_table(images, specs)
    print(markdown(table))
    if args.json:
        args.json.write_text(json.dumps({f: {**row, "outcomes": dict(row["outcomes"])} for f, row in table.items()},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
