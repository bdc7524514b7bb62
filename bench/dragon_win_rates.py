"""DRAGON's reward win rates on the toy audio world: for each tuned model, the share of held-out prompts on which it
beats the base model, for every target reward.

    python bench/dragon_win_rates.py --run verifier=RUN_A/final/lora --run clap=RUN_B/final/lora --json w.json

Every model (the base pipeline, and the base with each ``--run`` LoRA) generates ``--clips-per-prompt`` clips of
every test prompt from the same seeds, with the evaluation sampler (``python -m genrl.toy.evaluate_audio``: clip
``j`` of prompt ``i`` from seed ``seed + i * clips_per_prompt + j``). Each prompt gets one value per reward:

- ``aesthetic``: the mean predicted rating of its clips (``audio_aesthetic``, ``predictor=toy``: the shipped
  aesthetics-style predictor);
- ``clap``: the mean toy-CLAP score of its clips (``rewards.clap``, ``model=toy``);
- ``psfad_clap`` / ``psfad_vae``: the mean per-song FAD reward of its clips (``-FD`` of a clip's frames to the
  statistics of renders of the training prompts; frames: toy-CLAP embeddings of fadtk windows with ridge
  ``1e-4``, or the generator's own VAE posterior, one frame per latent step);
- ``dataset_fad``: ``-FD`` of the pooled CLAP frames of the prompt's clips to the same reference (ridge ``1e-4``);
- ``vendi``: the Vendi score of the prompt's clips (their mean CLAP frames, cosine kernel);
- ``partial`` / ``strict``: the mean verifier credit of its clips.

These are the rewards ``rewards.set_rewards`` computes during training, with the options of the runs in
docs/toy-audio-world.md. A tuned model *wins* a prompt when its value is higher than the base model's; the win
rate counts ties (frequent for the verifier: both always right or both never) as half, and the tie share is
printed beside it; a star marks a cell whose two-sided sign test (wins against losses) has p < 0.05. The whole
held-out set's values (the mean over prompts; dataset FAD and Vendi of all clips
together) are printed with a win rate of their own: the share of 200 bootstrap resamples of the prompts (the same draws for
both models) on which the tuned model's whole set scores higher.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

#: the FD ridge of the CLAP frames (fadtk windows of a 1-second clip: 8 frames of 64 dimensions)
CLAP_RIDGE = 1e-4
REWARD_KEYS = ("aesthetic", "clap", "psfad_clap", "psfad_vae", "dataset_fad", "vendi", "partial", "strict")


def win_rate(tuned: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """``(win rate, tie share)`` of per-prompt values: wins over prompts, ties counted as half."""
    tuned, base = np.asarray(tuned, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if tuned.shape != base.shape or tuned.ndim != 1 or not len(tuned):
        raise ValueError(f"per-prompt values must be two equal non-empty vectors, got {tuned.shape} and {base.shape}")
    ties = np.isclose(tuned, base, rtol=0.0, atol=1e-12)
    wins = (tuned > base) & ~ties
    return float(wins.mean() + 0.5 * ties.mean()), float(ties.mean())


def sign_test_p(tuned: np.ndarray, base: np.ndarray) -> float:
    """The two-sided sign test's p-value of the prompts won against those lost (ties left out; 1 without any)."""
    from scipy.stats import binomtest

    tuned, base = np.asarray(tuned, dtype=np.float64), np.asarray(base, dtype=np.float64)
    decided = ~np.isclose(tuned, base, rtol=0.0, atol=1e-12)
    wins, n = int((tuned > base)[decided].sum()), int(decided.sum())
    return float(binomtest(wins, n).pvalue) if n else 1.0


def bootstrap_set_win_rate(set_reward, tuned_groups: list, base_groups: list, resamples: int = 200,
                           seed: int = 0) -> float:
    """The win rate of a set reward: the share of bootstrap resamples of the prompts (drawn with replacement, the
    same draws for both models) whose tuned set beats the base set (ties count half). ``*_groups``: each prompt's
    list of per-clip frames; ``set_reward(frames)`` scores the pooled list."""
    if len(tuned_groups) != len(base_groups) or not tuned_groups:
        raise ValueError(f"need the same non-zero number of prompts, got {len(tuned_groups)} and {len(base_groups)}")
    rng = np.random.default_rng(seed)
    wins = 0.0
    for _ in range(resamples):
        draw = rng.integers(0, len(base_groups), len(base_groups))
        tuned = set_reward([f for i in draw for f in tuned_groups[i]])
        base = set_reward([f for i in draw for f in base_groups[i]])
        wins += 1.0 if tuned > base else 0.5 if tuned == base else 0.0
    return wins / resamples


class RewardSuite:
    """The evaluation rewards, built once (the reference statistics take a minute to render and embed)."""

    def __init__(self, pipeline_dir: str) -> None:
        from rewards import build_reward
        from rewards.toyaudio.world import SAMPLE_RATE

        self.aesthetic = build_reward("audio_aesthetic", predictor="toy", sample_rate=SAMPLE_RATE)
        self.clap = build_reward("clap", model="toy", sample_rate=SAMPLE_RATE)
        self.psfad_clap = build_reward("per_song_fd", encoder="clap", model="toy", sample_rate=SAMPLE_RATE,
                                       ridge=CLAP_RIDGE)
        self.psfad_vae = build_reward("per_song_fd", encoder="vae", pipeline=pipeline_dir, sample_rate=SAMPLE_RATE)

    def per_prompt(self, clips: np.ndarray, specs: list, per_prompt: int) -> tuple[dict[str, np.ndarray], list]:
        """Each reward's value per prompt of ``clips`` (``per_prompt`` consecutive clips per prompt) and the whole
        set's dataset FAD and Vendi (keys ``set_dataset_fad``, ``set_vendi``); and each prompt's CLAP frames."""
        import torch

        from rewards.distributional import frechet_distance, gaussian_stats
        from rewards.toyaudio.verifier import verify

        audio = torch.from_numpy(clips).float()
        prompts = [s.prompt for s in specs]
        n = len(specs) // per_prompt

        def by_prompt(values) -> np.ndarray:
            return np.asarray(values, dtype=np.float64).reshape(n, per_prompt).mean(axis=1)

        clap_frames = self.psfad_clap.frames(audio)
        reference = self.psfad_clap.reference

        verdicts = [verify(c, s) for c, s in zip(clips, specs, strict=True)]
        groups = [clap_frames[i * per_prompt:(i + 1) * per_prompt] for i in range(n)]
        return {
            "aesthetic": by_prompt(self.aesthetic(audio, prompts).scores.numpy()),
            "clap": by_prompt(self.clap(audio, prompts).scores.numpy()),
            "psfad_clap": by_prompt([-frechet_distance(gaussian_stats(f, CLAP_RIDGE), reference) for f in clap_frames]),
            "psfad_vae": by_prompt(self.psfad_vae(audio, prompts).scores.numpy()),
            "dataset_fad": np.array([self.dataset_fd(g) for g in groups]),
            "vendi": np.array([self.vendi(g) for g in groups]),
            "partial": by_prompt([v.partial for v in verdicts]),
            "strict": by_prompt([v.strict for v in verdicts]),
            "set_dataset_fad": np.array([self.dataset_fd(clap_frames)]),
            "set_vendi": np.array([self.vendi(clap_frames)]),
        }, groups

    def dataset_fd(self, frames: list) -> float:
        """``-FD`` of a set's pooled CLAP frames to the reference renders (``dataset_fd`` with ridge 1e-4)."""
        import torch

        from rewards.distributional import frechet_distance, gaussian_stats

        pooled = gaussian_stats(torch.cat(frames), CLAP_RIDGE, what="generated set")
        return -frechet_distance(pooled, self.psfad_clap.reference)

    @staticmethod
    def vendi(frames: list) -> float:
        """The Vendi score of a set's clips (each clip's mean CLAP frame, cosine kernel)."""
        import torch

        from rewards.distributional import vendi_score

        return vendi_score(torch.stack([f.mean(0) for f in frames]))


def _parse_runs(parser: argparse.ArgumentParser, runs: list[str]) -> dict[str, str]:
    out = {}
    for item in runs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--run {item!r}: expected NAME=LORA_DIR")
        if name in out or name == "base":
            parser.error(f"--run {item!r}: the name {name!r} is used twice (or is 'base')")
        if not Path(path).is_dir():
            parser.error(f"--run {item!r}: LoRA directory not found")
        out[name] = path
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy_audio", help="toy audio pipeline directory or alias")
    parser.add_argument("--run", action="append", default=[], help="NAME=LORA_DIR of a tuned model (repeatable)")
    parser.add_argument("--clips-per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-prompts", type=int, default=0, help="the first N test prompts only (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the per-prompt values and the tables here")
    args = parser.parse_args(argv)
    runs = _parse_runs(parser, args.run)
    if args.clips_per_prompt < 2:
        parser.error(f"--clips-per-prompt={args.clips_per_prompt} must be >= 2 (Vendi of a prompt's clips)")
    if args.max_prompts < 0:
        parser.error(f"--max-prompts={args.max_prompts} must be >= 0 (0: every test prompt)")

    import torch

    from genrl.models.loading import load_pipeline, resolve_model_path
    from genrl.toy.evaluate_audio import generate_clips
    from rewards.toyaudio.prompts import split

    torch.set_num_threads(args.threads)
    specs = [s for s in split("test")[:args.max_prompts or None] for _ in range(args.clips_per_prompt)]
    seeds = [args.seed + i for i in range(len(specs))]
    suite = RewardSuite(str(resolve_model_path(args.model)))
    values: dict[str, dict[str, np.ndarray]] = {}
    groups: dict[str, list] = {}
    for name, lora in {"base": None, **runs}.items():
        pipe = load_pipeline(args.model, lora=lora)
        pipe.set_progress_bar_config(disable=True)
        clips = generate_clips(pipe, [s.prompt for s in specs], seeds)
        values[name], groups[name] = suite.per_prompt(clips, specs, args.clips_per_prompt)
        means = "  ".join(f"{k} {values[name][k].mean():.4f}" for k in REWARD_KEYS)
        print(f"{name}: {means}  set dataset_fad {values[name]['set_dataset_fad'][0]:.4f}  "
              f"set vendi {values[name]['set_vendi'][0]:.3f}", flush=True)

    rates = {name: {k: (*win_rate(values[name][k], values["base"][k]), sign_test_p(values[name][k], values["base"][k]))
                    for k in REWARD_KEYS} for name in runs}
    print(f"\nwin rate over the base model on {len(specs) // args.clips_per_prompt} held-out prompts "
          "(ties count half; tie share in brackets; * sign test p < 0.05)")
    print("| trained on | " + " | ".join(REWARD_KEYS) + " |")
    print("|---" * (len(REWARD_KEYS) + 1) + "|")
    for name, row in rates.items():
        cells = [f"{w:.2f}{'*' if p < 0.05 else ''}" + (f" ({t:.2f})" if t else "") for w, t, p in row.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    set_rates = {name: {"dataset_fad": bootstrap_set_win_rate(suite.dataset_fd, groups[name], groups["base"]),
                        "vendi": bootstrap_set_win_rate(suite.vendi, groups[name], groups["base"])} for name in runs}
    print("\nset rewards of the whole held-out set: base and tuned value, and the win rate over 200 bootstrap "
          "resamples of the prompts")
    print("| trained on | dataset_fad | vendi |\n|---|---|---|")
    for name, row in set_rates.items():
        cells = [f"{values['base'][f'set_{k}'][0]:.4f} -> {values[name][f'set_{k}'][0]:.4f} ({row[k]:.2f})"
                 for k in ("dataset_fad", "vendi")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"model": args.model, "runs": runs, "clips_per_prompt": args.clips_per_prompt, "seed": args.seed,
                       "values": {m: {k: v.tolist() for k, v in d.items()} for m, d in values.items()},
                       "win_rates": {m: {k: {"win_rate": w, "ties": t, "sign_test_p": p} for k, (w, t, p) in r.items()}
                                     for m, r in rates.items()},
                       "set_win_rates": set_rates}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
