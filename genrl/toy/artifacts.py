"""Synthetic generation artifacts on toy scenes, the training data of the shipped toy artifact detector.

Four kinds, each a common failure of image generators drawn at the toy world's scale:

- ``broken``: an object torn by a background-coloured gap or with a displaced half;
- ``grid``: a faint periodic lattice (checkerboard/upsampling artifacts);
- ``bleed``: colour smeared into the background (a shifted, blurred chroma copy);
- ``noise``: leftover Gaussian noise.
"""

from __future__ import annotations

import random

import numpy as np

from rewards.toyworld.prompts import sample_specs, split
from rewards.toyworld.render import render
from rewards.toyworld.world import BACKGROUND_RGB

ARTIFACT_KINDS: tuple[str, ...] = ("broken", "grid", "bleed", "noise")


def _broken(img: np.ndarray, objects, rng: random.Random) -> np.ndarray:
    out = img.copy()
    o = rng.choice(objects)
    if rng.random() < 0.5:  # a gap through the object
        width = rng.randint(2, 3)
        if rng.random() < 0.5:
            y = o.top + rng.randint(o.size // 4, o.size - o.size // 4 - width)
            out[y:y + width, o.left:o.left + o.size] = BACKGROUND_RGB
        else:
            x = o.left + rng.randint(o.size // 4, o.size - o.size // 4 - width)
            out[o.top:o.top + o.size, x:x + width] = BACKGROUND_RGB
    else:  # the right half shifted vertically
        half = o.left + o.size // 2
        shift = rng.choice([-1, 1]) * rng.randint(3, 4)
        region = img[o.top:o.top + o.size, half:o.left + o.size].copy()
        out[o.top:o.top + o.size, half:o.left + o.size] = BACKGROUND_RGB
        top = int(np.clip(o.top + shift, 0, img.shape[0] - o.size))
        out[top:top + o.size, half:o.left + o.size] = np.minimum(out[top:top + o.size, half:o.left + o.size], region)
    return out


def _grid(img: np.ndarray, rng: random.Random) -> np.ndarray:
    period = rng.choice([2, 3, 4])
    strength = rng.uniform(0.12, 0.3)
    mask = np.zeros(img.shape[:2], dtype=np.float32)
    phase = rng.randrange(period)
    mask[phase::period, :] = 1.0
    mask[:, phase::period] = np.maximum(mask[:, phase::period], 1.0 if rng.random() < 0.7 else 0.0)
    tone = np.array(rng.choice([(0, 0, 0), (128, 128, 128), (200, 60, 200)]), dtype=np.float32)
    out = img.astype(np.float32) * (1 - strength * mask[..., None]) + tone * strength * mask[..., None]
    return out.clip(0, 255).astype(np.uint8)


def _bleed(img: np.ndarray, rng: random.Random) -> np.ndarray:
    dy, dx = rng.choice([(0, 2), (0, -2), (2, 0), (-2, 0), (1, 1), (-1, 1), (2, 2)])
    shifted = np.roll(img.astype(np.float32), (dy, dx), axis=(0, 1))
    blurred = shifted.copy()
    for axis in (0, 1):  # a 3-tap box blur along each axis
        blurred = (np.roll(blurred, 1, axis) + blurred + np.roll(blurred, -1, axis)) / 3
    alpha = rng.uniform(0.45, 0.7)
    out = np.minimum(img.astype(np.float32), (1 - alpha) * 255 + alpha * blurred)  # darker where colour spills
    return out.clip(0, 255).astype(np.uint8)


def _noise(img: np.ndarray, rng: random.Random) -> np.ndarray:
    sigma = rng.uniform(12, 35)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, sigma, img.shape)
    return (img.astype(np.float32) + noise).clip(0, 255).astype(np.uint8)


def add_artifact(image: np.ndarray, objects, kind: str, rng: random.Random) -> np.ndarray:
    """``image`` (uint8 ``(H, W, 3)``) with one artifact of ``kind`` drawn in."""
    if kind == "broken":
        return _broken(image, objects, rng)
    if kind == "grid":
        return _grid(image, rng)
    if kind == "bleed":
        return _bleed(image, rng)
    if kind == "noise":
        return _noise(image, rng)
    raise ValueError(f"unknown artifact kind {kind!r}; expected one of {ARTIFACT_KINDS}")


def artifact_dataset(n: int, rng: random.Random, split_name: str = "train",
                     kinds: tuple[str, ...] = ARTIFACT_KINDS) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` scenes, half clean and half with one artifact each: images ``(n, H, W, 3)`` uint8,
    labels (1 = artifact) and the artifact kind of each image (``"clean"`` for clean ones)."""
    images, labels, names = [], [], []
    for i, spec in enumerate(sample_specs(split(split_name), n, rng)):
        image, objects = render(spec, rng)
        if i % 2:
            kind = kinds[(i // 2) % len(kinds)]
            image = add_artifact(image, objects, kind, rng)
        else:
            kind = "clean"
        images.append(image)
        labels.append(int(kind != "clean"))
        names.append(kind)
    return np.stack(images), np.array(labels), names
