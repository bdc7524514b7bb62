"""The vocabulary of the toy world and the structured specs behind its prompts.

The world is GenEval-like: coloured geometric shapes on a plain background, described by
prompts in GenEval's six families. A prompt is always built from a :class:`PromptSpec`, so
the verifier can score an image against the spec instead of parsing text.

Why 32x32 pixels: a 32 px scene still holds three distinguishable objects of 9-13 px, while
a transformer over 8x8 latent tokens trains to useful quality on two CPU cores within the
pretraining budget (64 px would cost about 4x per step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

IMAGE_SIZE = 32
BACKGROUND_RGB = (255, 255, 255)

#: Colour names and their RGB values; chosen far apart in hue so that a blend with the
#: white background still points towards exactly one of them.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (235, 195, 20),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "purple": (140, 40, 180),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
PLURALS: dict[str, str] = {s: s + "es" if s.endswith("ss") else s + "s" for s in SHAPES}
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}

#: Relation phrases as GenEval writes them; the value is the unit vector (dx, dy) that the
#: first object's centre is displaced by relative to the second one (image y grows down).
RELATIONS: dict[str, tuple[int, int]] = {
    "left of": (-1, 0),
    "right of": (1, 0),
    "above": (0, -1),
    "below": (0, 1),
}

FAMILIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclass(frozen=True)
class ObjectSpec:
    """One required object group: ``count`` objects of ``shape`` (optionally of ``color``)."""

    shape: str
    count: int = 1
    color: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.color is not None and self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}; expected one of {tuple(COLORS)}")
        if not 1 <= self.count <= max(NUMBER_WORDS):
            raise ValueError(f"count must be in 1..{max(NUMBER_WORDS)}, got {self.count}")


@dataclass(frozen=True)
class PromptSpec:
    """The structured meaning of one prompt.

    ``relation`` is set only for the position family and reads "objects[0] <relation> objects[1]".
    """

    family: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    prompt: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {FAMILIES}")
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"unknown relation {self.relation!r}; expected one of {tuple(RELATIONS)}")
        if not self.prompt:
            object.__setattr__(self, "prompt", describe(self))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (used as per-sample metadata and in prompt files)."""
        return {"family": self.family, "prompt": self.prompt, "relation": self.relation,
                "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptSpec:
        """Inverse of :meth:`to_dict`."""
        objects = tuple(ObjectSpec(**o) for o in data["objects"])
        return cls(family=data["family"], objects=objects, relation=data.get("relation"),
                   prompt=data.get("prompt", ""))


def _noun_phrase(obj: ObjectSpec) -> str:
    colour = f"{obj.color} " if obj.color else ""
    if obj.count == 1:
        return f"a {colour}{obj.shape}"
    return f"{NUMBER_WORDS[obj.count]} {colour}{PLURALS[obj.shape]}"


def describe(spec: PromptSpec) -> str:
    """The GenEval-style prompt text for a spec, e.g. ``"a photo of a red circle left of a square"``."""
    phrases = [_noun_phrase(o) for o in spec.objects]
    if spec.relation is not None:
        if len(phrases) != 2:
            raise ValueError("a relation needs exactly two objects")
        return f"a photo of {phrases[0]} {spec.relation} {phrases[1]}"
    return "a photo of " + " and ".join(phrases)


def vocabulary() -> list[str]:
    """Every word a toy prompt can contain (used to build the toy tokenizer)."""
    words = {"a", "photo", "of", "and", "above", "below", "left", "right"}
    words |= set(COLORS) | set(SHAPES) | set(PLURALS.values()) | set(NUMBER_WORDS.values())
    return sorted(words)
