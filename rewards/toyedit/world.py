"""The toy edit world: (source scene, instruction, target scene) triples of the image toy world's shapes.

An :class:`EditSpec` holds a source scene (objects with exact boxes, every object a distinct shape and a
distinct colour, so "the red circle" names one object) and one edit:

============  ===========================================  =====================================================
family        instruction                                  target scene
============  ===========================================  =====================================================
``move``      "move the red circle left"                   that object shifted :data:`MOVE_DISTANCE` px that way
``swap``      "swap the circle and the square"             the two objects exchange centres (sizes kept)
``resize``    "make the red circle bigger"                 that object :data:`GROWTH` px larger, same centre
``recolor``   "turn the red circle blue"                   that object in the new colour, nothing else changed
============  ===========================================  =====================================================

``move`` and ``swap`` are motion edits (MotionNFT's motion-alignment reward is meant for them), ``resize``
and ``recolor`` appearance edits. :func:`exact_flow` gives the renderer's forward optical flow source ->
target (the ground truth every flow estimator is calibrated against). Sampling rejects layouts where the
edit would leave the canvas or make objects touch, so every target is a valid scene.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from rewards.toyworld.render import PlacedObject, render_objects, scene_fits, shape_coverage
from rewards.toyworld.world import COLORS, IMAGE_SIZE, SHAPES

EDIT_FAMILIES: tuple[str, ...] = ("move", "swap", "resize", "recolor")
MOTION_FAMILIES: frozenset[str] = frozenset({"move", "swap"})
#: Instruction direction -> unit displacement (x right, y down).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: How far "move" shifts an object, in pixels (a third of the canvas at 32 px would leave no room to move).
MOVE_DISTANCE = 8
#: How many pixels "bigger" adds to an object's side (kept centred, so an even number).
GROWTH = 4
#: Object sides in a source scene, by its number of objects (small enough that the edit has room).
SOURCE_SIZES: dict[int, tuple[int, int]] = {1: (9, 12), 2: (9, 11)}


@dataclass(frozen=True)
class EditSpec:
    """A source scene and one edit of one of its objects (see the module docstring)."""

    family: str
    objects: tuple[PlacedObject, ...]
    subject: int = 0  # index of the edited object (for swap, the first of the two)
    direction: str | None = None  # move
    new_color: str | None = None  # recolor
    other: int | None = None  # swap: index of the second object
    instruction: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in EDIT_FAMILIES:
            raise ValueError(f"unknown edit family {self.family!r}; expected one of {EDIT_FAMILIES}")
        if not 0 <= self.subject < len(self.objects):
            raise ValueError(f"subject {self.subject} is not an object index of a {len(self.objects)}-object scene")
        if self.family == "move" and self.direction not in DIRECTIONS:
            raise ValueError(f"a move needs a direction in {tuple(DIRECTIONS)}, got {self.direction!r}")
        if self.family == "recolor" and (self.new_color not in COLORS or self.new_color == self.subject_object.color):
            raise ValueError(f"a recolor needs a new colour in {tuple(COLORS)} other than the object's, got {self.new_color!r}")
        if self.family == "swap" and (self.other is None or self.other == self.subject or not 0 <= self.other < len(self.objects)):
            raise ValueError(f"a swap needs a second object index, got {self.other!r}")
        if len({o.shape for o in self.objects}) != len(self.objects) or len({o.color for o in self.objects}) != len(self.objects):
            raise ValueError("every object of an edit scene needs its own shape and its own colour")
        if not self.instruction:
            object.__setattr__(self, "instruction", describe_edit(self))

    @property
    def subject_object(self) -> PlacedObject:
        """The object the instruction names (for swap, the first one)."""
        return self.objects[self.subject]

    def target_objects(self) -> tuple[PlacedObject, ...]:
        """The objects of the target scene, in the source's order."""
        objs = list(self.objects)
        s = objs[self.subject]
        if self.family == "move":
            dx, dy = DIRECTIONS[self.direction]
            objs[self.subject] = replace(s, left=s.left + dx * MOVE_DISTANCE, top=s.top + dy * MOVE_DISTANCE)
        elif self.family == "resize":
            objs[self.subject] = replace(s, left=s.left - GROWTH // 2, top=s.top - GROWTH // 2, size=s.size + GROWTH)
        elif self.family == "recolor":
            objs[self.subject] = replace(s, color=self.new_color)
        else:
            o = objs[self.other]
            objs[self.subject] = _centred_at(s, o.center)
            objs[self.other] = _centred_at(o, s.center)
        return tuple(objs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (prompt files, per-sample metadata)."""
        return {"family": self.family, "instruction": self.instruction, "objects": [asdict(o) for o in self.objects],
                "subject": self.subject, "direction": self.direction, "new_color": self.new_color, "other": self.other}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(family=data["family"], objects=tuple(PlacedObject(**o) for o in data["objects"]),
                   subject=data.get("subject", 0), direction=data.get("direction"), new_color=data.get("new_color"),
                   other=data.get("other"), instruction=data.get("instruction", ""))


def as_edit_spec(value: Any, index: int) -> EditSpec:
    """A sample's ``spec`` metadata as an :class:`EditSpec` (itself, or its :meth:`EditSpec.to_dict` form from a
    prompt file); anything else is a ``TypeError`` naming the sample."""
    if isinstance(value, dict):
        return EditSpec.from_dict(value)
    if not isinstance(value, EditSpec):
        raise TypeError(f"sample {index}'s metadata 'spec' is not a toy edit ({type(value).__name__})")
    return value


def _centred_at(obj: PlacedObject, center: tuple[float, float]) -> PlacedObject:
    """``obj`` moved so its box centre is ``center`` (rounded to whole pixels)."""
    return replace(obj, left=round(center[0] - obj.size / 2), top=round(center[1] - obj.size / 2))


def _name(obj: PlacedObject) -> str:
    return f"the {obj.color} {obj.shape}"


def describe_edit(spec: EditSpec) -> str:
    """The instruction text of an edit, e.g. ``"move the red circle left"``."""
    s = spec.subject_object
    if spec.family == "move":
        return f"move {_name(s)} {spec.direction}"
    if spec.family == "resize":
        return f"make {_name(s)} bigger"
    if spec.family == "recolor":
        return f"turn {_name(s)} {spec.new_color}"
    return f"swap the {s.shape} and the {spec.objects[spec.other].shape}"


def edit_vocabulary() -> list[str]:
    """Every word an instruction can contain (for the toy edit pipeline's tokenizer)."""
    return sorted({"move", "the", "make", "bigger", "turn", "swap", "and"} | set(DIRECTIONS) | set(COLORS) | set(SHAPES))


def sample_edit(family: str, rng: random.Random, n_objects: int | None = None, size: int = IMAGE_SIZE,
                max_tries: int = 1000) -> EditSpec:
    """A random edit of ``family`` on a random scene of 1-2 objects (2 for swap) whose source and target both fit."""
    if family not in EDIT_FAMILIES:
        raise ValueError(f"unknown edit family {family!r}; expected one of {EDIT_FAMILIES}")
    n = n_objects or (2 if family == "swap" else rng.choice((1, 2)))
    lo, hi = SOURCE_SIZES[n]
    for _ in range(max_tries):
        shapes, colors = rng.sample(SHAPES, n), rng.sample(list(COLORS), n)
        objects = []
        for shape, color in zip(shapes, colors):
            s = rng.randint(lo, hi)
            objects.append(PlacedObject(shape, color, rng.randint(0, size - s), rng.randint(0, size - s), s))
        objects = tuple(objects)
        subject = rng.randrange(n)
        kwargs: dict[str, Any] = {}
        if family == "move":
            kwargs["direction"] = rng.choice(list(DIRECTIONS))
        elif family == "recolor":
            kwargs["new_color"] = rng.choice([c for c in COLORS if c not in colors])
        elif family == "swap":
            subject, kwargs["other"] = 0, 1
        spec = EditSpec(family, objects, subject, **kwargs)
        if scene_fits(objects, size) and scene_fits(spec.target_objects(), size):
            return spec
    raise RuntimeError(f"could not sample a {family} edit in {max_tries} tries")


def render_pair(spec: EditSpec, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The source and target scenes as ``(size, size, 3)`` uint8 images."""
    return render_objects(list(spec.objects), size), render_objects(list(spec.target_objects()), size)


def exact_flow(spec: EditSpec, size: int = IMAGE_SIZE) -> np.ndarray:
    """The renderer's forward optical flow source -> target, ``(size, size, 2)`` float32 (dx, dy) in pixels.

    Each source pixel an object covers (coverage >= 0.5) moves with that object: by the move, to the
    swapped centre, or away from the centre by the growth factor; background and recoloured pixels stay.
    """
    flow = np.zeros((size, size, 2), dtype=np.float32)
    for src, dst in zip(spec.objects, spec.target_objects()):
        inside = shape_coverage(src.shape, src.size) >= 0.5
        ys, xs = np.nonzero(inside)
        py, px = ys + src.top + 0.5, xs + src.left + 0.5  # pixel centres
        (cx, cy), (tx, ty) = src.center, dst.center
        scale = dst.size / src.size
        flow[ys + src.top, xs + src.left, 0] = tx + (px - cx) * scale - px
        flow[ys + src.top, xs + src.left, 1] = ty + (py - cy) * scale - py
    return flow
