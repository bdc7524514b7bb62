"""Train PISCES's neural OT map (text embeddings -> the video-embedding distribution) for the quality reward
``pisces_quality``, and report the release's selection metrics.

    python scripts/train_ot_map.py --toy                       # reproduces the shipped toy map
    python scripts/train_ot_map.py --features feats.safetensors --out my-map --rounds 160000

``--toy`` embeds clean clips of the toy video world's training prompts with the toy video-text model (held out:
one fresh clip of every prompt). ``--features`` reads your own embeddings, one embedder's (e.g. computed with
``rewards.video_embedders.build_video_text_embedder("xclip:microsoft/xclip-base-patch32")``): a safetensors file
of paired ``text`` and ``video`` rows ``(N, D)``, a seeded 5 % of which is held out for the metrics. The map loads
as ``build_reward("pisces_quality", embedder=..., ot_map=OUT)``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import fields
from pathlib import Path

import torch


def toy_data(clips_per_prompt: int, seed: int):
    from genrl.toy.video_text import toy_embedding_pairs
    from rewards.toyvideo.prompts import split
    from rewards.video_embedders import build_video_text_embedder

    embedder = build_video_text_embedder("toy")
    train = toy_embedding_pairs(embedder, list(split("train")), clips_per_prompt, random.Random(seed))
    held = toy_embedding_pairs(embedder, list(split("train")) + list(split("test")), 1, random.Random(seed + 1))
    return (*train, *held)


def feature_data(path: Path, seed: int):
    from safetensors.torch import load_file

    tensors = load_file(path)
    missing = {"text", "video"} - set(tensors)
    if missing:
        raise ValueError(f"{path}: needs tensors 'text' and 'video' (paired rows); missing {sorted(missing)}")
    text, video = tensors["text"].float(), tensors["video"].float()
    if text.ndim != 2 or text.shape != video.shape:
        raise ValueError(f"{path}: 'text' {tuple(text.shape)} and 'video' {tuple(video.shape)} must be paired (N, D)")
    order = torch.randperm(len(text), generator=torch.Generator().manual_seed(seed))
    n_held = max(11, round(0.05 * len(text)))
    if n_held >= len(text):
        raise ValueError(f"{path}: {len(text)} rows leave nothing to train on")
    held, train = order[:n_held], order[n_held:]
    return text[train], video[train], text[held], video[held]


def main(argv: list[str]) -> int:
    from rewards.ot_map_training import OTMapTrainConfig, train_ot_map
    from rewards.pisces_rewards import save_ot_map
    from rewards.toyvideo import TOY_OT_MAP_DIR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--toy", action="store_true", help="the toy video world with the toy video-text model")
    source.add_argument("--features", type=Path, help="safetensors file of paired 'text' and 'video' embeddings")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default with --toy: the shipped map)")
    parser.add_argument("--clips-per-prompt", type=int, default=8, help="--toy: clips rendered per training prompt")
    parser.add_argument("--threads", type=int, default=2)
    for f in fields(OTMapTrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=float if f.type == "float" else int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {f.name: getattr(args, f.name) for f in fields(OTMapTrainConfig) if getattr(args, f.name) is not None}
    cfg = OTMapTrainConfig(**overrides)
    out = args.out or (TOY_OT_MAP_DIR if args.toy else None)
    if out is None:
        parser.error("--out is required with --features")
    try:
        data = toy_data(args.clips_per_prompt, cfg.seed) if args.toy else feature_data(args.features, cfg.seed)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    T, record = train_ot_map(*data, cfg, log=lambda r: print(json.dumps(r), flush=True))
    save_ot_map(T, out, {"embedder": "toy" if args.toy else str(args.features), **record})
    print(json.dumps({"saved": str(out), **record["selected"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
