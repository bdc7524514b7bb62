"""Reading video clips and their captions from disk, for embedding real data (the OT map of R_Q).

A caption folder follows the Hugging Face ``videofolder`` layout: the clips (``.gif``, ``.mp4``, ``.webm``,
``.mov``, ``.mkv``) beside a ``metadata.jsonl`` whose lines name a clip and its caption,
``{"file_name": "clip_0001.mp4", "text": "a dog running on a beach"}``. GIFs decode with Pillow, the other
containers with PyAV (the ``video`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

from .optional import require

METADATA = "metadata.jsonl"
VIDEO_SUFFIXES = {".gif", ".mp4", ".webm", ".mov", ".mkv"}


def read_video(path: str | Path) -> torch.Tensor:
    """The frames of one clip as ``(F, 3, H, W)`` float in [0, 1]."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: not a video file (expected one of {sorted(VIDEO_SUFFIXES)})")
    if path.suffix.lower() == ".gif":
        with Image.open(path) as gif:
            frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]
    else:
        av = require("av")
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def read_caption_folder(folder: str | Path) -> list[tuple[Path, str]]:
    """``(clip path, caption)`` pairs listed by ``folder/metadata.jsonl``, in its order; a malformed line or a
    missing clip is an error naming the line."""
    folder = Path(folder)
    metadata = folder / METADATA
    if not metadata.is_file():
        raise FileNotFoundError(f"{folder}: no {METADATA} (one JSON line per clip: "
                                '{"file_name": "clip.mp4", "text": "its caption"})')
    pairs = []
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{metadata}:{number}: expected {{\"file_name\": ..., \"text\": ...}}") from None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{metadata}:{number}: empty caption")
        clip = folder / name
        if not clip.is_file():
            raise FileNotFoundError(f"{metadata}:{number}: clip {name!r} not found in {folder}")
        pairs.append((clip, text))
    if not pairs:
        raise ValueError(f"{metadata}: lists no clips")
    return pairs


@torch.no_grad()
def embed_caption_folder(embedder, folder: str | Path, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``(text, video)`` embeddings ``(N, D)``, in ``metadata.jsonl``'s order, of a caption folder's pairs with a
    :mod:`rewards.video_embedders` embedder (which samples and resizes frames itself). Clips of one shape are
    embedded together, ``batch_size`` at a time, since lengths and sizes may differ between clips."""
    pairs = read_caption_folder(folder)
    video: list[torch.Tensor | None] = [None] * len(pairs)
    pending: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}

    def flush(shape: tuple[int, ...]) -> None:
        index, clips = zip(*pending.pop(shape))
        for i, row in zip(index, embedder.embed_video(torch.stack(clips)).float().cpu()):
            video[i] = row

    for i, (path, _) in enumerate(pairs):
        clip = read_video(path)
        pending.setdefault(tuple(clip.shape), []).append((i, clip))
        if len(pending[tuple(clip.shape)]) == batch_size:
            flush(tuple(clip.shape))
    for shape in list(pending):
        flush(shape)
    captions = [text for _, text in pairs]
    text = torch.cat([embedder.embed_text(captions[i:i + batch_size]).float().cpu()
                      for i in range(0, len(captions), batch_size)])
    return text, torch.stack(video)
