"""Analytic verifier of toy edits: read an edited image against its source and instruction.

Both images go through the image world's detector (:func:`rewards.toyworld.verifier.detect`); the edited
object is found by its shape and colour (the new colour for a recolour), and the edit is checked as a list of
requirements, each 0 or 1:

* the edited object is there (its shape, its expected colour);
* ``move``: it moved the asked way (at least half of :data:`~rewards.toyedit.world.MOVE_DISTANCE` along the
  direction) and by about the right amount in a straight line (within half the distance of it, and at most
  :data:`POSITION_TOLERANCE` px across);
* ``swap``: each object sits where the other was (within :data:`POSITION_TOLERANCE` px);
* ``resize``: its area grew by at least :data:`MIN_GROWTH_RATIO`, and its centre stayed;
* ``recolor``: its centre stayed, and no object of its old colour and shape is left;
* every other object is kept (same shape and colour, within :data:`POSITION_TOLERANCE` px of where it was),
  and nothing was added (as many objects as the source).

Strict credit is 1 when every requirement holds, partial credit their mean.
"""

from __future__ import annotations

import math

import numpy as np

from rewards.toyworld.verifier import Detection, Verdict, detect

from .world import DIRECTIONS, MOVE_DISTANCE, EditSpec

#: How far (pixels, box centres) an object may sit from where the edit puts it.
POSITION_TOLERANCE = 3.0
#: A "bigger" object's area must grow by at least this factor (the renderer's growth gives 1.7-2.1).
MIN_GROWTH_RATIO = 1.3


def _find(detections: list[Detection], shape: str, color: str, near: tuple[float, float] | None = None) -> Detection | None:
    """The detection of that shape and colour (the nearest to ``near`` when there are several)."""
    found = [d for d in detections if d.shape == shape and d.color == color]
    if not found:
        return None
    if near is None:
        return found[0]
    return min(found, key=lambda d: math.dist(d.center, near))


def _near(d: Detection | None, point: tuple[float, float]) -> float:
    return float(d is not None and math.dist(d.center, point) <= POSITION_TOLERANCE)


def edit_requirements(source_detections: list[Detection], edited_detections: list[Detection],
                      spec: EditSpec) -> list[tuple[str, float]]:
    """The named requirements of an edit (see the module docstring) with their 0/1 scores."""
    subject = spec.subject_object
    before = _find(source_detections, subject.shape, subject.color)
    if before is None:
        raise ValueError(f"the source image does not show the {subject.color} {subject.shape} that {spec.instruction!r} names")
    color = spec.new_color if spec.family == "recolor" else subject.color
    after = _find(edited_detections, subject.shape, color, near=before.center)
    name = f"the {color} {subject.shape}"
    reqs = [(f"{name} is there", float(after is not None))]
    kept = [i for i in range(len(spec.objects)) if i != spec.subject and i != spec.other]
    if spec.family == "move":
        dx, dy = DIRECTIONS[spec.direction]
        along = cross = 0.0
        if after is not None:
            ox, oy = after.center[0] - before.center[0], after.center[1] - before.center[1]
            along, cross = ox * dx + oy * dy, abs(ox * dy - oy * dx)
        reqs.append((f"{name} moved {spec.direction}", float(after is not None and along >= MOVE_DISTANCE / 2)))
        reqs.append((f"{name} moved about {MOVE_DISTANCE} px in a straight line",
                     float(after is not None and abs(along - MOVE_DISTANCE) <= MOVE_DISTANCE / 2 and cross <= POSITION_TOLERANCE)))
    elif spec.family == "swap":
        other = spec.objects[spec.other]
        other_before = _find(source_detections, other.shape, other.color)
        if other_before is None:
            raise ValueError(f"the source image does not show the {other.color} {other.shape} that {spec.instruction!r} names")
        other_after = _find(edited_detections, other.shape, other.color, near=before.center)
        reqs.append((f"{name} where the {other.shape} was", _near(after, other_before.center)))
        reqs.append((f"the {other.shape} where {name} was", _near(other_after, before.center)))
    elif spec.family == "resize":
        reqs.append((f"{name} bigger", float(after is not None and after.area >= MIN_GROWTH_RATIO * before.area)))
        reqs.append((f"{name} in place", _near(after, before.center)))
    else:
        reqs.append((f"{name} in place", _near(after, before.center)))
        old = _find(edited_detections, subject.shape, subject.color, near=before.center)
        reqs.append((f"no {subject.color} {subject.shape} left", float(old is None)))
    for i in kept:
        obj = spec.objects[i]
        was = _find(source_detections, obj.shape, obj.color)
        if was is None:
            raise ValueError(f"the source image does not show its {obj.color} {obj.shape}")
        reqs.append((f"the {obj.color} {obj.shape} kept", _near(_find(edited_detections, obj.shape, obj.color, was.center), was.center)))
    reqs.append(("nothing added", float(len(edited_detections) <= len(source_detections))))
    return reqs


def verify_edit(source: np.ndarray, edited: np.ndarray, spec: EditSpec) -> Verdict:
    """Score an edited image against its source and instruction (images as the image verifier takes them)."""
    src, out = detect(source), detect(edited)
    reqs = edit_requirements(src, out, spec)
    failed = next((f"not: {name}" for name, ok in reqs if ok < 1.0), "")
    return Verdict(strict=float(not failed), partial=float(np.mean([ok for _, ok in reqs])),
                   detections=tuple(out), reason=failed or "ok")
