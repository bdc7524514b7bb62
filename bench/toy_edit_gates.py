"""The toy edit world's learnability gates, measured on a base edit pipeline before any RL.

    python bench/toy_edit_gates.py                              # the shipped toy edit pipeline, held-out edits
    python bench/toy_edit_gates.py --model /tmp/edit/kontext-toy --samples 16 --json gates.json

1. **It can do every part of an edit**: the README's standard evaluation (``--images-per-edit`` per held-out
   edit, the stock pipeline's deterministic sampler) per family, and how often each kind of requirement of the
   edit verifier holds over all those images: the edited object is there, it moved the asked way, by about
   the right amount, swapped, grew, stayed in place, the old colour is gone, the other objects are kept and
   nothing was added.
2. **Its errors are stochastic**: every held-out edit is sampled ``--samples`` times with the *training*
   sampler of ``--config`` (independent initial noise per sample); per family, the mean per-edit success p,
   the share of edits with p = 0, 0 < p < 1 and p = 1, and pass@k.

The third gate (RL moves it) is a training run: see docs/toy-edit-world.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("toy_gates", ROOT / "bench" / "toy_gates.py")
toy_gates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy_gates)

#: Requirement kinds, by the words of the verifier's requirement names (checked in this order).
REQUIREMENT_KINDS = (("nothing added", "nothing added"), ("kept", "others kept"), ("is there", "object there"),
                     ("in a straight line", "moved the right amount"), ("moved", "moved the right way"),
                     ("was", "swapped"), ("bigger", "grew"), ("in place", "stayed in place"), ("left", "old colour gone"))


def requirement_kind(name: str) -> str:
    """The kind of one of :func:`rewards.toyedit.verifier.edit_requirements`' named requirements."""
    for words, kind in REQUIREMENT_KINDS:
        if words in name:
            return kind
    raise ValueError(f"unknown edit requirement {name!r}")


def requirement_rates(sources: list[np.ndarray], edits: np.ndarray, specs) -> dict[str, float]:
    """How often each kind of requirement holds over (source, edit, spec) triples."""
    from rewards.toyedit.verifier import edit_requirements
    from rewards.toyworld.verifier import detect

    held: dict[str, list[float]] = defaultdict(list)
    for source, edit, spec in zip(sources, edits, specs, strict=True):
        for name, ok in edit_requirements(detect(source), detect(edit), spec):
            held[requirement_kind(name)].append(ok)
    return {kind: float(np.mean(held[kind])) for _, kind in REQUIREMENT_KINDS if kind in held}


def edit_strict(media, meta: dict) -> list[float]:
    """The edit verifier's strict verdicts of one edit's samples."""
    from rewards.toyedit.verifier import verify_edit

    source = np.asarray(meta["image"])
    return [verify_edit(source, edit, meta["spec"]).strict for edit in media.tensor.permute(0, 2, 3, 1).numpy()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toy_edit_motionnft.yaml"),
                        help="its sampler is the training sampler")
    parser.add_argument("--model", default=None, help="pipeline directory (default: the config's model.pretrained)")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--samples", type=int, default=16, help="training-sampler samples per edit")
    parser.add_argument("--images-per-edit", type=int, default=4, help="deterministic evaluation, per edit")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)
    if min(args.samples, args.images_per_edit) < 1:
        parser.error("--samples and --images-per-edit must be >= 1")
    with toy_gates.gates_trainer(args.config, args.overrides, args.model, f"toyedit:{args.split}") as trainer:
        import torch

        from genrl.toy.evaluate_edit import generate_edits, score_edits
        from rewards.toyedit import edit_split, render_pair

        pipe, specs = trainer.models.pipe, list(edit_split(args.split))
        expanded = [s for s in specs for _ in range(args.images_per_edit)]
        with torch.no_grad():
            pipe.set_progress_bar_config(disable=True)
            edits = generate_edits(pipe, expanded, list(range(len(expanded))))
        report = score_edits(edits, expanded)
        rates = requirement_rates([render_pair(s)[0] for s in expanded], edits, expanded)
        rows = toy_gates.training_sampler_success(trainer, args.samples, edit_strict)
    table = toy_gates.success_table(rows, args.samples)
    print(f"## Standard evaluation ({args.images_per_edit} images per edit, split {args.split})")
    print(report.table())
    print("requirements held: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    print(f"\n## Training sampler, {args.samples} samples per edit")
    print(toy_gates._markdown(table))
    if args.json:
        args.json.write_text(json.dumps({"standard": report.to_dict(), "requirements": rates, "per_edit": rows,
                                         "success": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
