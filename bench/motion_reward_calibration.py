"""How well the motion-alignment reward agrees with the toy edit verifier, per flow estimator, and its CPU cost.

    python bench/motion_reward_calibration.py                         # rendered candidates only
    python bench/motion_reward_calibration.py --model toy_edit        # plus the pipeline's own edits

For each motion edit (move, swap) of the toy edit world's test split, candidate edits are scored by the motion
reward (``F_g`` estimated from the ground-truth target, as in training) and by the verifier's partial credit:
the rendered target, the unedited source, the same object moved the other three ways, by half the distance, and,
with ``--model``, ``--samples`` edits sampled from the pipeline. The table gives, per estimator, the Spearman
rank correlation between the two scores, the mean reward of the true edits and of the unedited sources, the
end-point error of the estimator's flow source -> target against the renderer's exact flow, and milliseconds per
flow on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from scipy.stats import spearmanr

from rewards.motion_alignment import MotionAlignmentReward
from rewards.optical_flow import FLOW_ESTIMATORS
from rewards.toyedit import (
    DIRECTIONS,
    MOTION_FAMILIES,
    MOVE_DISTANCE,
    EditSpec,
    edit_split,
    exact_flow,
    render_pair,
)
from rewards.toyedit.verifier import verify_edit
from rewards.toyworld.render import render_objects, scene_fits


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def rendered_candidates(spec: EditSpec) -> list[np.ndarray]:
    """The true edit, the unedited source, the subject moved the other ways and by half the distance."""
    source, target = render_pair(spec)
    out = [target, source]
    if spec.family == "move":
        s = spec.subject_object
        for direction in DIRECTIONS:
            for distance in ({MOVE_DISTANCE} if direction != spec.direction else {MOVE_DISTANCE // 2}):
                dx, dy = DIRECTIONS[direction]
                moved = list(spec.objects)
                moved[spec.subject] = replace(s, left=s.left + dx * distance, top=s.top + dy * distance)
                if scene_fits(moved, 32):
                    out.append(render_objects(moved))
    else:  # only one of the two objects moved
        swapped = spec.target_objects()
        half = list(spec.objects)
        half[spec.subject] = swapped[spec.subject]
        if scene_fits(half, 32):
            out.append(render_objects(half))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimators", nargs="+", default=[e for e in FLOW_ESTIMATORS if e != "raft_large"],
                        choices=FLOW_ESTIMATORS)
    parser.add_argument("--raft-weights", default=None, help="RAFT weights (a torchvision name or a file); none: random")
    parser.add_argument("--model", default=None, help="also score edits sampled from this pipeline (e.g. toy_edit)")
    parser.add_argument("--samples", type=int, default=4, help="pipeline edits per test edit with --model")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    specs = [s for s in edit_split("test") if s.family in MOTION_FAMILIES]
    rows: list[tuple[EditSpec, np.ndarray, str]] = []
    for spec in specs:
        kinds = ["true", "unedited"] + ["wrong"] * 10
        rows += [(spec, c, k) for c, k in zip(rendered_candidates(spec), kinds)]
    if args.model:
        from genrl.models.loading import load_pipeline
        from genrl.toy.evaluate_edit import generate_edits

        pipe = load_pipeline(args.model)
        pipe.set_progress_bar_config(disable=True)
        expanded = [s for s in specs for _ in range(args.samples)]
        edits = generate_edits(pipe, expanded, list(range(len(expanded))))
        rows += [(s, np.clip(np.rint(e * 255), 0, 255).astype(np.uint8), "sampled") for s, e in zip(expanded, edits)]
    partial = np.array([verify_edit(render_pair(s)[0], c, s).partial for s, c, _ in rows])
    kinds = np.array([k for _, _, k in rows])
    meta = []
    for s, _, _ in rows:
        source, target = render_pair(s)
        meta.append({"image": _tensor(source), "target": _tensor(target), "spec": s})
    edits = torch.stack([_tensor(c) for _, c, _ in rows])
    results = {}
    print(f"{len(rows)} candidate edits of {len(specs)} motion edits ({', '.join(f'{k}: {(kinds == k).sum()}' for k in dict.fromkeys(kinds))})")
    print("| estimator | Spearman vs verifier partial | reward of true edits | of unedited sources | flow EPE (px) | ms per flow |")
    print("|---|---|---|---|---|---|")
    for name in args.estimators:
        weights = args.raft_weights if name.startswith("raft") else None
        reward = MotionAlignmentReward(flow=name, flow_weights=weights)
        start = time.perf_counter()
        scores = reward(edits, [s.instruction for s, _, _ in rows], meta).scores.numpy()
        ms = 1000 * (time.perf_counter() - start) / (2 * len(rows))  # two flows per candidate
        truth = torch.stack([torch.from_numpy(exact_flow(s)).permute(2, 0, 1) for s in specs])
        targets = torch.stack([_tensor(render_pair(s)[1]) for s in specs])
        epe = float((reward.estimator(torch.stack([_tensor(render_pair(s)[0]) for s in specs]), targets) - truth)
                    .norm(dim=1).mean())
        rho = float(spearmanr(scores, partial).statistic)
        results[name] = {"spearman": rho, "true": float(scores[kinds == "true"].mean()),
                         "unedited": float(scores[kinds == "unedited"].mean()), "epe": epe, "ms_per_pair": ms}
        print(f"| {name}{' (random weights)' if name.startswith('raft') and not weights else ''} | {rho:.3f} | "
              f"{results[name]['true']:.2f} | {results[name]['unedited']:.2f} | {epe:.2f} | {ms:.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
