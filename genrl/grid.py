"""Captioned image grids for inspecting samples, and the choice of what they show."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genrl.utils.files import atomic_write_path


def _caption_lines(caption: str, width: int, max_lines: int) -> list[str]:
    """Wrap each line of ``caption``; when they do not fit, the first line is cut, never the later
    ones (which carry a sample's scores)."""
    first, *rest = caption.split("\n")
    tail = [line for part in rest for line in textwrap.wrap(part, width)][-max_lines:]
    return textwrap.wrap(first, width)[:max_lines - len(tail)] + tail


def make_grid(images: np.ndarray, captions: Sequence[str], *, columns: int = 4, cell: int = 128,
              caption_lines: int = 3, font_size: int = 11, title: str | None = None) -> Image.Image:
    """Lay out ``(N, H, W, 3)`` images (uint8 or float in [0, 1]) in a grid with a caption under each.

    A caption may have several lines (``\\n``); its first line (the prompt) is the one shortened to
    fit ``caption_lines``. ``title`` is written above the grid. Small images are enlarged with
    nearest-neighbour resampling so pixels stay visible.
    """
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    if len(images) == 0:
        raise ValueError("cannot make a grid of zero images")
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    font = ImageFont.load_default(size=font_size)
    line_h = font_size + 3
    cell_w = max(1, round(cell * arr.shape[2] / arr.shape[1]))  # wide images (edit triples) keep their aspect
    chars_per_line = max(8, int(cell_w / (font_size * 0.55)))
    cols = min(columns, len(arr))
    rows = (len(arr) + cols - 1) // cols
    cell_h = cell + caption_lines * line_h + 6
    top = 8 + (line_h + 6 if title else 0)
    canvas = Image.new("RGB", (cols * (cell_w + 8) + 8, top + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((8, 6), title, fill="black", font=font)
    for i, (img, caption) in enumerate(zip(arr, captions, strict=True)):
        x, y = 8 + (i % cols) * (cell_w + 8), top + (i // cols) * cell_h
        canvas.paste(Image.fromarray(img).resize((cell_w, cell), Image.NEAREST), (x, y))
        draw.rectangle([x - 1, y - 1, x + cell_w, y + cell], outline=(180, 180, 180))
        for j, line in enumerate(_caption_lines(caption, chars_per_line, caption_lines)):
            draw.text((x, y + cell + 3 + j * line_h), line, fill="black", font=font)
    return canvas


def edit_triples(edits: np.ndarray, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray | None]) -> np.ndarray:
    """``(N, H, W, 3)`` edits laid out as ``source | edit | target`` strips ``(N, H, 3W, 3)`` (a missing target
    is left white); sources and targets are resized to the edit's size."""
    edits = np.asarray(edits)
    to_float = (lambda a: a.astype(np.float32) / 255.0) if edits.dtype == np.uint8 else (lambda a: a.astype(np.float32))
    h, w = edits.shape[1:3]

    def fitted(image: np.ndarray | None) -> np.ndarray:
        if image is None:
            return np.ones((h, w, 3), dtype=np.float32)
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        if image.shape[:2] != (h, w):
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        return image.astype(np.float32) / 255.0

    return np.stack([np.concatenate([fitted(s), to_float(e), fitted(t)], axis=1)
                     for e, s, t in zip(edits, sources, targets, strict=True)])


def spread_over_families(families: Sequence[str | None], n: int) -> list[int]:
    """Indices of up to ``n`` items taking each family in turn (families in order of first appearance),
    returned grouped by family, so a grid of a test set shows every family, not only the first ones."""
    by_family: dict[str | None, list[int]] = {}
    for i, family in enumerate(families):
        by_family.setdefault(family, []).append(i)
    chosen: list[int] = []
    for depth in range(max((len(v) for v in by_family.values()), default=0)):
        for members in by_family.values():
            if depth < len(members) and len(chosen) < n:
                chosen.append(members[depth])
    order = {family: k for k, family in enumerate(by_family)}
    return sorted(chosen, key=lambda i: (order[families[i]], i))


def verdict(score: float) -> str:
    """A score as a caption shows it: a 0/1 verdict as fail/pass, anything else with two decimals."""
    if math.isnan(score):
        return "n/a"
    if score in (0.0, 1.0):
        return "pass" if score == 1.0 else "fail"
    return f"{score:.2f}"


def scored_caption(prompt: str, scores: Mapping[str, float]) -> str:
    """``prompt`` and a second line with each score, e.g. ``strict pass, partial 0.50``."""
    return prompt + "\n" + ", ".join(f"{name} {verdict(score)}" for name, score in scores.items())


def save_image_atomically(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG through a temporary file in the same directory, so a crash never leaves half a file."""
    with atomic_write_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
