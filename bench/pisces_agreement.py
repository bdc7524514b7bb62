"""How well PISCES's rewards on the toy video-text model agree with the toy video verifier, on a base pipeline's
clips: whether R_Q and R_S can stand in for the verifier as a training signal.

    python bench/pisces_agreement.py                                  # the shipped pipeline, held-out prompts
    python bench/pisces_agreement.py --model /tmp/video/wan-toy --split train --clips-per-prompt 8 --json out.json
    python bench/pisces_agreement.py --lora RUN/final/lora --families apart counting   # after RL: is the reward hacked?

Each prompt gets ``--clips-per-prompt`` clips of the deterministic sampler (the evaluation's seeds), scored by the
verifier (strict and partial) and by ``pisces_quality`` (R_Q), ``pisces_semantic`` (R_S) and the plain matching
probability (R_S without the OT plan). Per reward: the Spearman correlation with partial credit over all clips,
the AUC of telling strictly right clips from wrong ones, and the *within-prompt* agreement, the share of a
prompt's (right, wrong) clip pairs the reward orders right, which is what group-relative advantages use; and the
mean reward of the generated clips against clean rendered clips of the same prompts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from itertools import product

import numpy as np


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The probability that a random positive outscores a random negative (ties count half); NaN without both."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(np.mean([(p > n) + 0.5 * (p == n) for p, n in product(pos, neg)]))


def within_prompt_agreement(scores: np.ndarray, positive: np.ndarray, prompt: np.ndarray) -> tuple[float, int]:
    """The share of same-prompt (right, wrong) clip pairs ordered right, and their number."""
    hits = []
    for p in np.unique(prompt):
        mine = prompt == p
        for s_pos, s_neg in product(scores[mine & positive], scores[mine & ~positive]):
            hits.append((s_pos > s_neg) + 0.5 * (s_pos == s_neg))
    return (float(np.mean(hits)) if hits else float("nan")), len(hits)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy_video", help="toy video pipeline directory or alias")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--clips-per-prompt", type=int, default=4)
    parser.add_argument("--max-prompts", type=int, default=0, help="the first N prompts of the split (0: all)")
    parser.add_argument("--lora", default=None, help="a LoRA directory to load on top (e.g. a run's final/lora)")
    parser.add_argument("--families", nargs="+", default=None, help="only these prompt families (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from genrl.models.loading import load_pipeline
    from genrl.toy.evaluate_video import generate_videos
    from genrl.toy.video_text import render_clips
    from rewards import build_reward
    from rewards.toyvideo.prompts import split
    from rewards.toyvideo.verifier import verify_clip

    torch.set_num_threads(args.threads)
    specs = [s for s in split(args.split) if args.families is None or s.family in args.families]
    if not specs:
        parser.error(f"--families {' '.join(args.families)}: no {args.split} prompt is of these families")
    specs = specs[: args.max_prompts or None]
    expanded = [s for s in specs for _ in range(args.clips_per_prompt)]
    pipe = load_pipeline(args.model, lora=args.lora)
    pipe.set_progress_bar_config(disable=True)
    clips = generate_videos(pipe, [s.prompt for s in expanded], list(range(len(expanded))))
    verdicts = [verify_clip(c, s) for c, s in zip(clips, expanded, strict=True)]
    strict = np.array([v.strict for v in verdicts]) > 0.5
    partial = np.array([v.partial for v in verdicts])
    prompt = np.array([s.prompt for s in expanded])
    rewards = {"R_Q": build_reward("pisces_quality"), "R_S": build_reward("pisces_semantic"),
               "matching (no OT)": build_reward("pisces_semantic", pot=False)}
    clean = render_clips(expanded, random.Random(0))
    out: dict = {"model": args.model, "lora": args.lora, "families": args.families, "split": args.split,
                 "clips": len(expanded),
                 "verifier_strict": float(strict.mean()), "verifier_partial": float(partial.mean()), "rewards": {}}
    prompts = [s.prompt for s in expanded]
    for name, reward in rewards.items():
        with torch.no_grad():
            scores = np.concatenate([reward(torch.from_numpy(clips[i:i + 64]), prompts[i:i + 64]).scores.numpy()
                                     for i in range(0, len(clips), 64)])
            on_clean = np.concatenate([reward(clean[i:i + 64], prompts[i:i + 64]).scores.numpy()
                                       for i in range(0, len(clean), 64)])
        agreement, pairs = within_prompt_agreement(scores, strict, prompt)
        out["rewards"][name] = {"spearman_partial": float(spearmanr(scores, partial).statistic),
                                "auc_strict": auc(scores, strict), "within_prompt": agreement,
                                "within_prompt_pairs": pairs, "mean_generated": float(scores.mean()),
                                "mean_right": float(scores[strict].mean()) if strict.any() else float("nan"),
                                "mean_wrong": float(scores[~strict].mean()) if (~strict).any() else float("nan"),
                                "mean_clean": float(on_clean.mean())}
    print(f"{out['clips']} clips of {len(specs)} {args.split} prompts from {args.model}: verifier strict "
          f"{out['verifier_strict']:.3f}, partial {out['verifier_partial']:.3f}")
    print(f"{'reward':<18} {'Spearman(partial)':>17} {'AUC(strict)':>11} {'within-prompt':>13} {'pairs':>6} "
          f"{'generated':>9} {'right':>6} {'wrong':>6} {'clean':>6}")
    for name, r in out["rewards"].items():
        print(f"{name:<18} {r['spearman_partial']:>17.3f} {r['auc_strict']:>11.3f} {r['within_prompt']:>13.3f} "
              f"{r['within_prompt_pairs']:>6} {r['mean_generated']:>9.3f} {r['mean_right']:>6.3f} {r['mean_wrong']:>6.3f} "
              f"{r['mean_clean']:>6.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
