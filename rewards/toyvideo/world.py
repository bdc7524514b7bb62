"""The vocabulary of the toy video world and the structured specs behind its prompts.

Clips are :data:`NUM_FRAMES` frames of the image world's 32 x 32 scenes (its shapes and colours on white) in
which the objects move at constant velocity, described by prompts in five families:

=============  ===============================================  ============================================
family         prompt                                           what the clip shows
=============  ===============================================  ============================================
``direction``  "a video of a red circle moving left"            one object, 1-2 px per frame that way
``speed``      "a video of a red circle moving slowly left"     1 px per frame ("slowly") or 2.5 ("quickly")
``still``      "a video of a red circle standing still"         one object that does not move
``apart``      "a video of a red circle and a blue square       two objects moving away from (or towards)
               moving apart" / "... moving together"            each other along the line between them
``counting``   "a video of two red circles moving left"         2 or 3 like objects moving together
=============  ===============================================  ============================================

A prompt is always built from a :class:`VideoSpec`, so the verifier scores a clip against the spec instead of
parsing text. Why 9 frames: Wan's causal VAE takes 4k + 1 frames (the first alone, then groups of four), and 8
steps of motion at 1-2.5 px per frame cross a third to most of the canvas, which a tracker reads unambiguously.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rewards.toyworld.world import COLORS, IMAGE_SIZE, PLURALS, SHAPES

NUM_FRAMES = 9
FPS = 8
FRAME_SIZE = IMAGE_SIZE

VIDEO_FAMILIES: tuple[str, ...] = ("direction", "speed", "still", "apart", "counting")
#: Direction word -> unit velocity (x right, y down).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: Speed words of the ``speed`` family -> pixels per frame.
SPEEDS: dict[str, float] = {"slowly": 1.0, "quickly": 2.5}
#: Pixels per frame of the other moving families (drawn per clip for ``direction``; ``counting`` moves at 1).
PLAIN_SPEEDS: tuple[float, ...] = (1.0, 2.0)
#: ``apart`` relations -> sign of the change of the two objects' distance; each object moves this fast.
RELATIONS: dict[str, int] = {"apart": 1, "together": -1}
APART_SPEED = 0.5
NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three"}


@dataclass(frozen=True)
class MoverSpec:
    """One group of like objects in a clip: ``count`` objects of ``shape`` in ``color``."""

    shape: str
    color: str
    count: int = 1

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}; expected one of {tuple(COLORS)}")
        if self.count not in (1, *NUMBER_WORDS):
            raise ValueError(f"count must be 1, 2 or 3, got {self.count}")


@dataclass(frozen=True)
class VideoSpec:
    """The structured meaning of one prompt (see the module docstring for the families)."""

    family: str
    objects: tuple[MoverSpec, ...]
    direction: str | None = None  # direction, speed, counting
    speed: str | None = None  # speed: "slowly" or "quickly"
    relation: str | None = None  # apart: "apart" or "together"
    prompt: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in VIDEO_FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {VIDEO_FAMILIES}")
        moving = self.family in ("direction", "speed", "counting")
        if moving != (self.direction is not None) or (self.direction is not None and self.direction not in DIRECTIONS):
            raise ValueError(f"family {self.family!r} needs a direction in {tuple(DIRECTIONS)} only when it moves one "
                             f"way, got {self.direction!r}")
        if (self.family == "speed") != (self.speed is not None) or (self.speed is not None and self.speed not in SPEEDS):
            raise ValueError(f"a speed ({tuple(SPEEDS)}) belongs to the speed family only, got {self.speed!r}")
        if (self.family == "apart") != (self.relation is not None) or (
                self.relation is not None and self.relation not in RELATIONS):
            raise ValueError(f"a relation ({tuple(RELATIONS)}) belongs to the apart family only, got {self.relation!r}")
        wanted = {"apart": 2}.get(self.family, 1)
        if len(self.objects) != wanted:
            raise ValueError(f"family {self.family!r} takes {wanted} object group(s), got {len(self.objects)}")
        if (self.family == "counting") != (self.objects[0].count > 1) or any(o.count > 1 for o in self.objects[1:]):
            raise ValueError("only the counting family has (and needs) a count above one")
        if self.family == "apart" and (self.objects[0].shape == self.objects[1].shape
                                       or self.objects[0].color == self.objects[1].color):
            raise ValueError("the two objects of an apart clip need different shapes and different colours")
        if not self.prompt:
            object.__setattr__(self, "prompt", describe(self))

    @property
    def num_objects(self) -> int:
        """Objects in the clip."""
        return sum(o.count for o in self.objects)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (per-sample metadata, prompt files)."""
        return {"family": self.family, "prompt": self.prompt, "objects": [asdict(o) for o in self.objects],
                "direction": self.direction, "speed": self.speed, "relation": self.relation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(family=data["family"], objects=tuple(MoverSpec(**o) for o in data["objects"]),
                   direction=data.get("direction"), speed=data.get("speed"), relation=data.get("relation"),
                   prompt=data.get("prompt", ""))


def _noun(obj: MoverSpec) -> str:
    if obj.count == 1:
        return f"a {obj.color} {obj.shape}"
    return f"{NUMBER_WORDS[obj.count]} {obj.color} {PLURALS[obj.shape]}"


def describe(spec: VideoSpec) -> str:
    """The prompt text of a spec, e.g. ``"a video of a red circle moving slowly left"``."""
    subject = " and ".join(_noun(o) for o in spec.objects)
    if spec.family == "still":
        return f"a video of {subject} standing still"
    if spec.family == "apart":
        return f"a video of {subject} moving {spec.relation}"
    speed = f"{spec.speed} " if spec.speed else ""
    return f"a video of {subject} moving {speed}{spec.direction}"


def video_vocabulary() -> list[str]:
    """Every word a toy video prompt can contain (for the toy video pipeline's tokenizer)."""
    words = {"a", "video", "of", "and", "moving", "standing", "still"}
    words |= set(COLORS) | set(SHAPES) | set(PLURALS.values()) | set(NUMBER_WORDS.values())
    return sorted(words | set(DIRECTIONS) | set(SPEEDS) | set(RELATIONS))
