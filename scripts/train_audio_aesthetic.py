"""Fit an aesthetics-style audio predictor (the ``audio_aesthetic`` reward): a small MLP on chunk-averaged CLAP
embeddings, regressed on ratings of clips.

    python scripts/train_audio_aesthetic.py --ratings ratings.csv --clap laion/clap-htsat-unfused --out my-predictor
    python scripts/train_audio_aesthetic.py --toy --window-s 1 --hop-s 1 --out rewards/toyaudio/assets/toy-audio-aesthetic

``--ratings``: a CSV with a header and the columns ``path`` (a ``.wav`` file, relative to the CSV's folder) and
``rating`` (any numeric scale, e.g. 1-5 listener scores as DRAGON's DMA ratings); clips are read at
``--sample-rate`` and split at random into training and held-out clips.

``--toy``: the toy audio world's ratings, made here: the shipped toy pipeline (or ``--model``) generates
``--clips-per-prompt`` clips of every training prompt with the evaluation sampler, and each clip's rating is the
verifier's best partial credit over every prompt of the world: how cleanly it renders *something* the world can
describe, whatever it was asked for (a listener's quality rating, blind to the prompt, as DRAGON's predictor is).
Silence, smeared or spurious events and off-grid pitches rate low. Held-out clips are those of a random fifth of
the prompts. The CLAP is the shipped toy CLAP unless ``--clap`` names another.

The predictor folder (``config.json`` with the held-out figures, ``model.safetensors``) is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path


def read_ratings(path: Path, sample_rate: int) -> tuple[list, list[float]]:
    """The clips (``(T,)`` tensors) and ratings of a ratings CSV; a bad row is an error naming its line."""
    from rewards.audio_frames import read_wav

    if not path.is_file():
        raise FileNotFoundError(f"--ratings {path}: file not found")
    clips, ratings = [], []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "rating"} <= set(reader.fieldnames):
            raise ValueError(f"--ratings {path}: the header must name the columns 'path' and 'rating', got "
                             f"{reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                rating = float(row["rating"])
            except (TypeError, ValueError):
                raise ValueError(f"--ratings {path} line {line}: rating {row['rating']!r} is not a number") from None
            clip = (path.parent / row["path"]).expanduser()
            if not clip.is_file():
                raise FileNotFoundError(f"--ratings {path} line {line}: clip {clip} not found")
            clips.append(read_wav(clip, sample_rate, what=f"--ratings line {line}: clip"))
            ratings.append(rating)
    if len(clips) < 10:
        raise ValueError(f"--ratings {path}: {len(clips)} rated clips; fit on at least 10")
    return clips, ratings


def toy_ratings(model: str, clips_per_prompt: int, seed: int) -> tuple[list, list[float], list[int]]:
    """Generated clips of the toy training prompts, their best verifier partial credit over the world's prompts, and
    each clip's prompt index."""
    import torch

    from genrl.models.loading import load_pipeline
    from genrl.toy.evaluate_audio import generate_clips
    from rewards.toyaudio.prompts import all_specs, split
    from rewards.toyaudio.verifier import detect, verify_events

    specs = [s for s in split("train") for _ in range(clips_per_prompt)]
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    clips = generate_clips(pipe, [s.prompt for s in specs], [seed + i for i in range(len(specs))])
    world = [s for family in all_specs().values() for s in family]
    ratings = [max(verify_events(events, s).partial for s in world) for events in map(detect, clips)]
    groups = [i // clips_per_prompt for i in range(len(specs))]
    return [torch.from_numpy(c).float() for c in clips], ratings, groups


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ratings", type=Path, help="CSV of path,rating")
    source.add_argument("--toy", action="store_true", help="rate the toy generator's clips with the verifier")
    parser.add_argument("--out", type=Path, required=True, help="the predictor folder to write")
    parser.add_argument("--clap", default="toy", help="CLAP model id or folder ('toy': the shipped toy CLAP)")
    parser.add_argument("--clap-backend", default="transformers", choices=("transformers", "laion_clap"))
    parser.add_argument("--model", default="toy_audio", help="--toy: the generator (pipeline folder or alias)")
    parser.add_argument("--clips-per-prompt", type=int, default=8, help="--toy: clips per training prompt")
    parser.add_argument("--sample-rate", type=int, default=48_000, help="--ratings: the rate clips are read at")
    parser.add_argument("--window-s", type=float, default=0.25, help="CLAP window (fadtk chunking), seconds")
    parser.add_argument("--hop-s", type=float, default=0.125, help="CLAP window hop, seconds")
    parser.add_argument("--hidden", type=int, nargs="*", default=[64], help="hidden layer sizes of the head")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction={args.val_fraction} must be in (0, 1)")
    for name in ("clips_per_prompt", "steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")

    import torch

    from rewards.audio_aesthetic import chunk_averaged_embeddings, fit_rating_head, save_predictor
    from rewards.audio_frames import ClapFrames

    torch.set_num_threads(args.threads)
    try:
        if args.toy:
            from rewards.toyaudio.world import SAMPLE_RATE

            clips, ratings, groups = toy_ratings(args.model, args.clips_per_prompt, args.seed)
            rate, what = SAMPLE_RATE, (f"toy: the best verifier partial credit over the world's prompts of {args.model}"
                                       " clips of the training prompts")
        else:
            clips, ratings = read_ratings(args.ratings, args.sample_rate)
            groups, rate, what = list(range(len(clips))), args.sample_rate, str(args.ratings)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    frames = ClapFrames(rate, window_s=args.window_s, hop_s=args.hop_s, model=args.clap, backend=args.clap_backend)
    embeds = torch.cat([chunk_averaged_embeddings(frames, c[None]) for c in clips])
    held_out = set(random.Random(args.seed).sample(sorted(set(groups)), max(1, round(args.val_fraction * len(set(groups))))))
    val = [i for i, g in enumerate(groups) if g in held_out]
    train = [i for i, g in enumerate(groups) if g not in held_out]
    head, figures = fit_rating_head(embeds, torch.tensor(ratings), train, val, hidden=args.hidden, steps=args.steps,
                                    lr=args.lr, seed=args.seed)
    config = {"clap_model": args.clap, "clap_backend": args.clap_backend, "window_s": args.window_s,
              "hop_s": args.hop_s, "embed_dim": int(embeds.shape[1]), "hidden": list(args.hidden), "ratings": what,
              "rating_mean": float(torch.tensor(ratings).mean()), "figures": figures}
    out = save_predictor(args.out, head, config)
    print(f"{len(clips)} clips ({figures['train_clips']} training, {figures['val_clips']} held out): held-out MSE "
          f"{figures['val_mse']:.4f} (the training mean's {figures['val_mse_of_mean']:.4f}), Pearson "
          f"{figures['val_pearson']:.3f}, Spearman {figures['val_spearman']:.3f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
