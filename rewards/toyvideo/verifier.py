"""Analytic verifier of toy clips: track the objects through the frames and read the spec's requirements.

Every frame goes through the image world's detector (:func:`rewards.toyworld.verifier.detect`); an object group
is the detections of its shape and colour, and its motion is the displacement of the group's mean centre from
the first frame it is seen in to the last. Requirements, each 0 or 1:

* each group is there, as many as the prompt says, in all but at most one frame (:data:`MAX_MISSED_FRAMES`),
  the first and last included;
* nothing else: in all but at most one frame the clip holds as many objects as the prompt names;
* ``direction`` / ``speed`` / ``counting``: the group moved the asked way, at least :data:`MIN_TRAVEL` px along
  it and at most half as far across; ``speed``: "slowly" travels at most :data:`SLOW_MAX_TRAVEL` px over the
  clip, "quickly" at least :data:`QUICK_MIN_TRAVEL` (the renderer's 8 and 20);
* ``still``: it moved at most :data:`STILL_MAX_TRAVEL` px;
* ``apart``: the two objects' distance grew (or, "together", shrank) by at least :data:`MIN_DISTANCE_CHANGE` px
  (the renderer's 8).

Strict credit is 1 when every requirement holds, partial credit their mean.
"""

from __future__ import annotations

import math

import numpy as np

from rewards.toyworld.verifier import Detection, Verdict, detect

from .world import DIRECTIONS, NUM_FRAMES, RELATIONS, VideoSpec

MAX_MISSED_FRAMES = 1
MIN_TRAVEL = 4.0
SLOW_MAX_TRAVEL = 13.0
QUICK_MIN_TRAVEL = 15.0
STILL_MAX_TRAVEL = 2.0
MIN_DISTANCE_CHANGE = 5.0


def _frames(clip: np.ndarray) -> np.ndarray:
    """A clip as ``(F, H, W, 3)``: given as that, or ``(F, 3, H, W)``; uint8 or float in [0, 1]."""
    arr = np.asarray(clip)
    if arr.ndim != 4:
        raise ValueError(f"expected a clip of shape (frames, H, W, 3) or (frames, 3, H, W), got {arr.shape}")
    if arr.shape[1] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(0, 2, 3, 1)
    if (len(arr) - 1) % 4:
        raise ValueError(f"a toy clip has 4k + 1 frames (the toy world's {NUM_FRAMES}), got {len(arr)}")
    return arr


def _group(detections: list[Detection], shape: str, color: str) -> list[Detection]:
    return [d for d in detections if d.shape == shape and d.color == color]


def _mean_center(group: list[Detection]) -> tuple[float, float]:
    return (float(np.mean([d.center[0] for d in group])), float(np.mean([d.center[1] for d in group])))


def clip_requirements(per_frame: list[list[Detection]], spec: VideoSpec) -> list[tuple[str, float]]:
    """The named requirements of a clip (see the module docstring) with their 0/1 scores."""
    frames = len(per_frame)
    reqs: list[tuple[str, float]] = []
    seen_in: list[list[int]] = []
    for obj in spec.objects:
        name = f"{obj.count} {obj.color} {obj.shape}" + ("s" if obj.count > 1 else "")
        found = [t for t, dets in enumerate(per_frame) if len(_group(dets, obj.shape, obj.color)) == obj.count]
        there = len(found) >= frames - MAX_MISSED_FRAMES and {0, frames - 1} <= set(found)
        reqs.append((f"{name} in every frame", float(there)))
        seen_in.append(found)
    expected = spec.num_objects
    right_count = sum(len(dets) == expected for dets in per_frame)
    reqs.append(("nothing else", float(right_count >= frames - MAX_MISSED_FRAMES)))

    def travel(i: int) -> tuple[float, float] | None:
        """Displacement (dx, dy) of group i between the first and last frames it is seen in full."""
        found = seen_in[i]
        if len(found) < 2:
            return None
        obj = spec.objects[i]
        first, last = (_mean_center(_group(per_frame[t], obj.shape, obj.color)) for t in (found[0], found[-1]))
        return last[0] - first[0], last[1] - first[1]

    if spec.family in ("direction", "speed", "counting"):
        d = travel(0)
        dx, dy = DIRECTIONS[spec.direction]
        along, cross = (d[0] * dx + d[1] * dy, abs(d[0] * dy - d[1] * dx)) if d else (0.0, 0.0)
        reqs.append((f"moving {spec.direction}", float(d is not None and along >= MIN_TRAVEL and cross <= along / 2)))
        if spec.family == "speed":
            ok = along <= SLOW_MAX_TRAVEL if spec.speed == "slowly" else along >= QUICK_MIN_TRAVEL
            reqs.append((f"moving {spec.speed}", float(d is not None and along >= MIN_TRAVEL and ok)))
    elif spec.family == "still":
        d = travel(0)
        reqs.append(("standing still", float(d is not None and math.hypot(*d) <= STILL_MAX_TRAVEL)))
    else:
        both = [t for t in seen_in[0] if t in seen_in[1]]
        change = 0.0
        if len(both) >= 2:
            a, b = spec.objects

            def dist(t: int) -> float:
                return math.dist(_mean_center(_group(per_frame[t], a.shape, a.color)),
                                 _mean_center(_group(per_frame[t], b.shape, b.color)))

            change = dist(both[-1]) - dist(both[0])
        reqs.append((f"moving {spec.relation}",
                     float(len(both) >= 2 and RELATIONS[spec.relation] * change >= MIN_DISTANCE_CHANGE)))
    return reqs


def verify_clip(clip: np.ndarray, spec: VideoSpec) -> Verdict:
    """Score a clip (``(F, H, W, 3)`` or ``(F, 3, H, W)``, uint8 or float in [0, 1]) against ``spec``; the
    verdict's detections are the first frame's."""
    per_frame = [detect(frame) for frame in _frames(clip)]
    reqs = clip_requirements(per_frame, spec)
    failed = next((f"not: {name}" for name, ok in reqs if ok < 1.0), "")
    return Verdict(strict=float(not failed), partial=float(np.mean([ok for _, ok in reqs])),
                   detections=tuple(per_frame[0]), reason=failed or "ok")
