"""Captioned image grids for inspecting samples."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genrl.utils.files import atomic_write_path


def make_grid(images: np.ndarray, captions: Sequence[str], *, columns: int = 4, cell: int = 128,
              caption_lines: int = 3, font_size: int = 11) -> Image.Image:
    """Lay out ``(N, H, W, 3)`` images (uint8 or float in [0, 1]) in a grid with a caption under each.

    Small images are enlarged with nearest-neighbour resampling so pixels stay visible.
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
    chars_per_line = max(8, int(cell / (font_size * 0.55)))
    cols = min(columns, len(arr))
    rows = (len(arr) + cols - 1) // cols
    cell_h = cell + caption_lines * line_h + 6
    canvas = Image.new("RGB", (cols * (cell + 8) + 8, rows * cell_h + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, caption) in enumerate(zip(arr, captions, strict=True)):
        x, y = 8 + (i % cols) * (cell + 8), 8 + (i // cols) * cell_h
        canvas.paste(Image.fromarray(img).resize((cell, cell), Image.NEAREST), (x, y))
        draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline=(180, 180, 180))
        lines = textwrap.wrap(caption, chars_per_line)[:caption_lines]
        for j, line in enumerate(lines):
            draw.text((x, y + cell + 3 + j * line_h), line, fill="black", font=font)
    return canvas


def save_image_atomically(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG through a temporary file in the same directory, so a crash never leaves half a file."""
    with atomic_write_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
