"""Train PISCES's neural OT map (text embeddings -> the video-embedding distribution) for the quality reward
``pisces_quality``, and report the release's selection metrics.

    python scripts/train_ot_map.py --toy                       # reproduces the shipped toy map
    python scripts/train_ot_map.py --features feats.safetensors --out my-map --rounds 160000
    python scripts/train_ot_map.py --videos my-clips/ --embedder xclip:microsoft/xclip-base-patch32 --out my-map \
        --save-features my-clips.safetensors

``--toy`` embeds clean clips of the toy video world's training prompts with the toy video-text model (held out:
one fresh clip of every prompt). ``--features`` reads your own embeddings, one embedder's (e.g. computed with
``rewards.video_embedders.build_video_text_embedder("xclip:microsoft/xclip-base-patch32")``): a safetensors file
of paired ``text`` and ``video`` rows ``(N, D)``, a seeded 5 % of which is held out for the metrics. The map loads
as ``build_reward("pisces_quality", embedder=..., ot_map=OUT)``. ``--videos`` embeds a caption folder itself (the
clips beside a ``metadata.jsonl`` of ``{"file_name": ..., "text": ...}`` lines, see :mod:`rewards.video_files`)
with ``--embedder`` (the one the reward will use), holds out 5 % as ``--features`` does, and with
``--save-features`` keeps the embeddings for later runs. The map directory is replaced atomically.
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
    return held_out_split(tensors["text"].float(), tensors["video"].float(), seed, str(path))


def folder_data(folder: Path, embedder_spec: str, pretrained: str | None, device: str, seed: int,
                save_features: Path | None):
    from rewards.video_embedders import build_video_text_embedder
    from rewards.video_files import embed_caption_folder

    text, video = embed_caption_folder(build_video_text_embedder(embedder_spec, pretrained, device), folder)
    if save_features is not None:
        from safetensors.torch import save_file

        from genrl.utils.files import atomic_write_path

        with atomic_write_path(save_features) as tmp:
            save_file({"text": text.contiguous(), "video": video.contiguous()}, tmp)
    return held_out_split(text, video, seed, str(folder))


def held_out_split(text: torch.Tensor, video: torch.Tensor, seed: int, source: str):
    """``(train text, train video, held text, held video)``: a seeded 5 % (at least 11 rows) held out."""
    if text.ndim != 2 or text.shape != video.shape:
        raise ValueError(f"{source}: 'text' {tuple(text.shape)} and 'video' {tuple(video.shape)} must be paired (N, D)")
    order = torch.randperm(len(text), generator=torch.Generator().manual_seed(seed))
    n_held = max(11, round(0.05 * len(text)))
    if n_held >= len(text):
        raise ValueError(f"{source}: {len(text)} rows leave nothing to train on")
    held, train = order[:n_held], order[n_held:]
    return text[train], video[train], text[held], video[held]


def main(argv: list[str]) -> int:
    from genrl.utils.files import replace_dir_atomically
    from rewards.ot_map_training import OTMapTrainConfig, train_ot_map
    from rewards.pisces_rewards import save_ot_map
    from rewards.toyvideo import TOY_OT_MAP_DIR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--toy", action="store_true", help="the toy video world with the toy video-text model")
    source.add_argument("--features", type=Path, help="safetensors file of paired 'text' and 'video' embeddings")
    source.add_argument("--videos", type=Path, help="a caption folder (clips + metadata.jsonl) to embed")
    parser.add_argument("--embedder", default=None, help="--videos: the embedder spec (toy, a directory, xclip:ID, "
                        "clip:NAME), the one pisces_quality will use")
    parser.add_argument("--pretrained", default=None, help="--videos with clip:NAME: open_clip's pretrained tag")
    parser.add_argument("--device", default="cpu", help="--videos: where the embedder runs")
    parser.add_argument("--save-features", type=Path, default=None, help="--videos: also write the embeddings here")
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
        parser.error("--out is required with --features and --videos")
    if args.videos is not None and args.embedder is None:
        parser.error("--videos needs --embedder (the embedder pisces_quality will use with this map)")
    try:
        if args.toy:
            data, embedder = toy_data(args.clips_per_prompt, cfg.seed), "toy"
        elif args.videos is not None:
            data = folder_data(args.videos, args.embedder, args.pretrained, args.device, cfg.seed, args.save_features)
            embedder = args.embedder
        else:
            data, embedder = feature_data(args.features, cfg.seed), str(args.features)
    except (OSError, ValueError, ImportError) as err:  # ImportError: an MP4 clip without PyAV (the video extra)
        print(f"error: {err}", file=sys.stderr)
        return 2
    T, record = train_ot_map(*data, cfg, log=lambda r: print(json.dumps(r), flush=True))
    replace_dir_atomically(out, lambda tmp: save_ot_map(T, tmp, {"embedder": embedder, **record}))
    print(json.dumps({"saved": str(out), **record["selected"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
