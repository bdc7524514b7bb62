"""Procedural renderer of toy clips: the image world's shapes moving at constant velocity.

Each object follows a :class:`Track` (start box and velocity); frame ``t`` draws it at the start position plus
``t`` times the velocity, rounded to whole pixels, with the image world's anti-aliased renderer. Layouts are
drawn until every object stays inside the canvas and at least ``MIN_GAP`` px from the others in every frame
(:func:`rewards.toyworld.render.scene_fits`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from rewards.toyworld.render import PlacedObject, render_objects, scene_fits

from .world import APART_SPEED, DIRECTIONS, FRAME_SIZE, NUM_FRAMES, PLAIN_SPEEDS, RELATIONS, SPEEDS, VideoSpec

#: Object sides (pixels) by the number of objects in the clip: smaller than the image world's, so they can move.
SIZE_RANGE: dict[int, tuple[int, int]] = {1: (9, 11), 2: (9, 10), 3: (9, 9)}


@dataclass(frozen=True)
class Track:
    """One object's path: shape, colour, side, start box (left, top) and velocity (pixels per frame)."""

    shape: str
    color: str
    size: int
    left: float
    top: float
    vx: float
    vy: float

    def at(self, frame: int) -> PlacedObject:
        """The object's box in ``frame`` (whole pixels)."""
        return PlacedObject(self.shape, self.color, round(self.top + self.vy * frame),
                            round(self.left + self.vx * frame), self.size)


def _velocities(spec: VideoSpec, rng: random.Random, starts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Each object's velocity: one shared direction and speed, none, or along the line between two objects."""
    if spec.family == "still":
        return [(0.0, 0.0)]
    if spec.family == "apart":
        (ax, ay), (bx, by) = starts
        dist = math.hypot(bx - ax, by - ay) or 1.0
        ux, uy = (bx - ax) / dist, (by - ay) / dist  # from the first towards the second
        s = RELATIONS[spec.relation] * APART_SPEED
        return [(-s * ux, -s * uy), (s * ux, s * uy)]
    speed = (SPEEDS[spec.speed] if spec.family == "speed" else
             1.0 if spec.family == "counting" else rng.choice(PLAIN_SPEEDS))
    dx, dy = DIRECTIONS[spec.direction]
    return [(speed * dx, speed * dy)] * spec.num_objects


def _fits(tracks: list[Track], size: int, frames: int) -> bool:
    return all(scene_fits([tr.at(t) for tr in tracks], size) for t in range(frames))


def layout_clip(spec: VideoSpec, rng: random.Random, size: int = FRAME_SIZE, frames: int = NUM_FRAMES,
                max_tries: int = 5000) -> list[Track]:
    """Random tracks that show ``spec`` and stay inside the canvas, apart, in every frame."""
    wanted = [(o.shape, o.color) for o in spec.objects for _ in range(o.count)]
    lo, hi = SIZE_RANGE[len(wanted)]
    for _ in range(max_tries):
        sides = [rng.randint(lo, hi) for _ in wanted]
        starts = [(rng.uniform(0, size - s), rng.uniform(0, size - s)) for s in sides]
        velocities = _velocities(spec, rng, [(x + s / 2, y + s / 2) for (x, y), s in zip(starts, sides)])
        tracks = [Track(shape, color, s, x, y, vx, vy)
                  for (shape, color), s, (x, y), (vx, vy) in zip(wanted, sides, starts, velocities)]
        if _fits(tracks, size, frames):
            return tracks
    raise RuntimeError(f"could not lay out {spec.prompt!r} in {max_tries} tries")


def render_tracks(tracks: list[Track], size: int = FRAME_SIZE, frames: int = NUM_FRAMES) -> np.ndarray:
    """The clip of ``tracks``: ``(frames, size, size, 3)`` uint8."""
    return np.stack([render_objects([tr.at(t) for tr in tracks], size) for t in range(frames)])


def render_clip(spec: VideoSpec, rng: random.Random, size: int = FRAME_SIZE,
                frames: int = NUM_FRAMES) -> tuple[np.ndarray, list[Track]]:
    """A random clip that shows ``spec``: its frames ``(frames, size, size, 3)`` uint8 and its tracks."""
    tracks = layout_clip(spec, rng, size, frames)
    return render_tracks(tracks, size, frames), tracks


def render_batch(specs: list[VideoSpec], rng: random.Random, size: int = FRAME_SIZE,
                 frames: int = NUM_FRAMES) -> np.ndarray:
    """One clip per spec: ``(N, frames, size, size, 3)`` uint8."""
    return np.stack([render_clip(s, rng, size, frames)[0] for s in specs])
