"""Procedural renderer of toy scenes: anti-aliased coloured shapes on a white background."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .world import BACKGROUND_RGB, COLORS, IMAGE_SIZE, RELATIONS, PromptSpec

_SUPERSAMPLE = 4
#: Object sizes (bounding-box side in pixels) by the number of objects in the scene.
SIZE_RANGE = {1: (11, 14), 2: (10, 13), 3: (9, 11)}
MIN_GAP = 2
#: A rendered relation is unambiguous: the main-axis offset is at least this many pixels and
#: at least twice the cross-axis offset.
RELATION_MIN_OFFSET = 10


def _shape_inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Membership of unit-square coordinates (x right, y down, both in [0, 1]) in a shape."""
    if shape == "circle":
        return (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    if shape == "square":
        return np.ones_like(x, dtype=bool)
    if shape == "triangle":  # apex up, base along the bottom edge
        return np.abs(x - 0.5) <= 0.5 * y
    if shape == "cross":  # a plus sign with arms a third of the size wide
        return (np.abs(x - 0.5) <= 1 / 6) | (np.abs(y - 0.5) <= 1 / 6)
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=512)
def shape_coverage(shape: str, height: int, width: int | None = None) -> np.ndarray:
    """Fractional pixel coverage (float32 in [0, 1]) of a shape filling a ``height x width`` box."""
    width = height if width is None else width
    ys = (np.arange(height * _SUPERSAMPLE) + 0.5) / (height * _SUPERSAMPLE)
    xs = (np.arange(width * _SUPERSAMPLE) + 0.5) / (width * _SUPERSAMPLE)
    x, y = np.meshgrid(xs, ys)
    inside = _shape_inside(shape, x, y).astype(np.float32)
    cov = inside.reshape(height, _SUPERSAMPLE, width, _SUPERSAMPLE).mean(axis=(1, 3))
    cov.setflags(write=False)
    return cov


@dataclass(frozen=True)
class PlacedObject:
    """One object of a rendered scene: its shape, colour and bounding box (top, left, size)."""

    shape: str
    color: str
    top: int
    left: int
    size: int

    @property
    def center(self) -> tuple[float, float]:
        """Centre (x, y) in pixels."""
        return self.left + self.size / 2, self.top + self.size / 2


def _overlaps(a: PlacedObject, b: PlacedObject) -> bool:
    return not (a.left + a.size + MIN_GAP <= b.left or b.left + b.size + MIN_GAP <= a.left
                or a.top + a.size + MIN_GAP <= b.top or b.top + b.size + MIN_GAP <= a.top)


def scene_fits(objects, size: int = IMAGE_SIZE) -> bool:
    """Whether every object lies inside the ``size`` canvas and the objects are pairwise ``MIN_GAP`` px apart."""
    objects = list(objects)
    inside = all(o.left >= 0 and o.top >= 0 and o.left + o.size <= size and o.top + o.size <= size for o in objects)
    return inside and not any(_overlaps(a, b) for i, a in enumerate(objects) for b in objects[i + 1:])


def _relation_holds_clearly(a: PlacedObject, b: PlacedObject, relation: str) -> bool:
    dx, dy = RELATIONS[relation]
    ox, oy = a.center[0] - b.center[0], a.center[1] - b.center[1]
    main = ox * dx + oy * dy
    cross = abs(ox * dy - oy * dx)
    return main >= RELATION_MIN_OFFSET and 2 * cross <= main


def layout(spec: PromptSpec, rng: random.Random, size: int = IMAGE_SIZE, max_tries: int = 1000) -> list[PlacedObject]:
    """Random non-overlapping placement of the objects a spec asks for.

    Objects without a requested colour get a random one. For a relation, the layout makes
    it hold unambiguously.
    """
    wanted = [(o.shape, o.color) for o in spec.objects for _ in range(o.count)]
    lo, hi = SIZE_RANGE[min(len(wanted), max(SIZE_RANGE))]
    for _ in range(max_tries):
        placed: list[PlacedObject] = []
        for shape, color in wanted:
            s = rng.randint(lo, hi)
            obj = PlacedObject(shape, color or rng.choice(list(COLORS)), rng.randint(0, size - s),
                               rng.randint(0, size - s), s)
            if any(_overlaps(obj, p) for p in placed):
                break
            placed.append(obj)
        else:
            if spec.relation is None or _relation_holds_clearly(placed[0], placed[1], spec.relation):
                return placed
    raise RuntimeError(f"could not lay out {spec.prompt!r} in {max_tries} tries")


def render_objects(objects: list[PlacedObject], size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw objects into an ``(size, size, 3)`` uint8 image."""
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = BACKGROUND_RGB
    for o in objects:
        alpha = shape_coverage(o.shape, o.size)[..., None]
        region = img[o.top:o.top + o.size, o.left:o.left + o.size]
        region[:] = region * (1 - alpha) + np.asarray(COLORS[o.color], dtype=np.float32) * alpha
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(spec: PromptSpec, rng: random.Random, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[PlacedObject]]:
    """Render a random scene that satisfies ``spec``; returns the image and its objects."""
    objects = layout(spec, rng, size)
    return render_objects(objects, size), objects


def render_batch(specs: list[PromptSpec], rng: random.Random, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render one scene per spec into an ``(N, size, size, 3)`` uint8 array."""
    return np.stack([render(s, rng, size)[0] for s in specs])
