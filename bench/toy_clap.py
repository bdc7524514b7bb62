"""How good a reward the toy CLAP is: retrieval on held-out renders, and agreement with the verifier on a
generator's clips.

    python bench/toy_clap.py                                        # the shipped toy CLAP and toy audio pipeline
    python bench/toy_clap.py --clap /tmp/toy-clap --model /tmp/audio/stable-audio-toy --clips-per-prompt 4 --json c.json

Held-out prompts are the test prompts that are not also training prompts (the single-note family is in both).

1. **Retrieval** (renders of the held-out prompts, ``--renders`` each): top-1 accuracy of picking a clip's prompt
   among every held-out prompt of its family (chance: one over the family's size).
2. **Agreement with the verifier** on the generator's clips of the held-out prompts (the deterministic sampler,
   ``--clips-per-prompt`` each, as ``python -m genrl.toy.evaluate_audio`` samples them): the CLAP score's AUC for
   telling strictly right clips from wrong ones, and its Spearman correlation with the verifier's partial credit,
   over all clips and within prompts (the comparison a group-relative advantage makes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

import numpy as np


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The probability that a positive's score exceeds a negative's (ties count half); NaN without both."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None]).mean()
    ties = (pos[:, None] == neg[None]).mean()
    return float(greater + 0.5 * ties)


def within_group_spearman(scores: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> float:
    """The mean Spearman correlation inside groups where both the scores and the targets vary."""
    from scipy.stats import spearmanr

    values = []
    for g in np.unique(groups):
        s, t = scores[groups == g], targets[groups == g]
        if len(s) > 2 and np.ptp(s) > 0 and np.ptp(t) > 0:
            values.append(spearmanr(s, t).statistic)
    return float(np.mean(values)) if values else float("nan")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clap", default=None, help="toy CLAP folder (default: the shipped one)")
    parser.add_argument("--model", default="toy_audio", help="toy audio pipeline directory or alias")
    parser.add_argument("--renders", type=int, default=4, help="renders per held-out prompt for retrieval")
    parser.add_argument("--clips-per-prompt", type=int, default=4, help="generated clips per held-out prompt")
    parser.add_argument("--max-prompts", type=int, default=0, help="the first N held-out prompts only (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    for name in ("renders", "clips_per_prompt", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if args.max_prompts < 0:
        parser.error(f"--max-prompts={args.max_prompts} must be >= 0 (0: every held-out prompt)")
    if args.clap is not None and not os.path.isfile(os.path.join(args.clap, "config.json")):
        parser.error(f"--clap {args.clap}: no toy CLAP there (config.json missing)")

    import torch
    from scipy.stats import spearmanr

    from genrl.models.loading import load_pipeline
    from genrl.toy.clap import held_out_specs, retrieval_accuracy
    from genrl.toy.evaluate_audio import generate_clips
    from rewards.clap import ClapReward
    from rewards.toyaudio import TOY_CLAP_DIR
    from rewards.toyaudio.verifier import verify
    from rewards.toyaudio.world import SAMPLE_RATE

    torch.set_num_threads(args.threads)
    reward = ClapReward(model=str(args.clap or TOY_CLAP_DIR), sample_rate=SAMPLE_RATE)  # loaded once, used twice
    test = held_out_specs()[:args.max_prompts or None]
    retrieval = retrieval_accuracy(reward.model, reward.processor, test, random.Random(1), per_prompt=args.renders)
    print("retrieval top-1 on held-out renders: " + "  ".join(f"{k} {v:.2f}" for k, v in retrieval.items()))

    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    specs = [s for s in test for _ in range(args.clips_per_prompt)]
    clips = generate_clips(pipe, [s.prompt for s in specs], list(range(len(specs))))
    verdicts = [verify(c, s) for c, s in zip(clips, specs, strict=True)]
    strict = np.array([v.strict for v in verdicts]) > 0.5
    partial = np.array([v.partial for v in verdicts])
    scores = reward(torch.from_numpy(clips).float(), [s.prompt for s in specs]).scores.numpy()
    groups = np.repeat(np.arange(len(test)), args.clips_per_prompt)
    agreement = {"clips": len(specs), "strict_rate": float(strict.mean()), "auc_strict": auc(scores, strict),
                 "spearman_partial": float(spearmanr(scores, partial).statistic),
                 "spearman_partial_within_prompt": within_group_spearman(scores, partial, groups)}
    print(f"on {len(specs)} generated clips (strict {agreement['strict_rate']:.2f}): AUC for strictly right "
          f"{agreement['auc_strict']:.3f}; Spearman with partial credit {agreement['spearman_partial']:.3f} overall, "
          f"{agreement['spearman_partial_within_prompt']:.3f} within prompts")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"clap": str(args.clap or TOY_CLAP_DIR), "model": args.model, "retrieval_top1": retrieval,
                       "verifier_agreement": agreement}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
