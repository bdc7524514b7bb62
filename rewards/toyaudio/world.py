"""The vocabulary of the toy audio world and the structured specs behind its prompts.

Clips are one second of mono audio at 8 kHz: a few notes (sine, square or plucked tones, or noise-burst drum
hits), alone, in sequence or as a chord, described by prompts in six GenEval-like families. A prompt is always
built from an :class:`AudioSpec`, so the verifier scores a clip against the spec instead of parsing text.

Why 8 kHz and one second: four notes of 120-200 ms with gaps fit, every register's fundamental and the
overtones that tell the timbres apart (up to the third harmonic of the highest note, 2.96 kHz) lie below the
4 kHz Nyquist frequency, and a clip is short enough (8,000 samples) for a tiny Stable Audio model on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SAMPLE_RATE = 8000
DURATION_S = 1.0
NUM_SAMPLES = int(SAMPLE_RATE * DURATION_S)

#: Pitched timbres (a note's word) and the unpitched drum hit
PITCHED: tuple[str, ...] = ("sine", "square", "plucked")
DRUM = "drum"
TIMBRES: tuple[str, ...] = (*PITCHED, DRUM)

#: Register name -> the MIDI notes it spans (one octave each: C3-B3, C4-B4, C5-B5)
REGISTERS: dict[str, range] = {"low": range(48, 60), "middle": range(60, 72), "high": range(72, 84)}
CONTOURS: tuple[str, ...] = ("rising", "falling")
#: A chord is a major triad on its root: root, major third, fifth (semitones)
CHORD_INTERVALS: tuple[int, ...] = (0, 4, 7)
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_EVENTS = 4

FAMILIES: tuple[str, ...] = ("single_note", "register", "counting", "melody", "chord", "sequence")


@dataclass(frozen=True)
class EventSpec:
    """One required sound event: a ``timbre`` note (or drum hit), optionally in a ``register``, optionally a
    major-triad ``chord``."""

    timbre: str
    register: str | None = None
    chord: bool = False

    def __post_init__(self) -> None:
        if self.timbre not in TIMBRES:
            raise ValueError(f"unknown timbre {self.timbre!r}; expected one of {TIMBRES}")
        if self.register is not None and self.register not in REGISTERS:
            raise ValueError(f"unknown register {self.register!r}; expected one of {tuple(REGISTERS)}")
        if self.timbre == DRUM and (self.register is not None or self.chord):
            raise ValueError("a drum hit has no register and is never a chord")


@dataclass(frozen=True)
class AudioSpec:
    """The structured meaning of one prompt: ``count`` copies of one event kind (``counting``, ``melody``, the
    single-event families) or two different events in order (``sequence``); ``contour`` orders the pitches of a
    melody."""

    family: str
    events: tuple[EventSpec, ...]
    count: int = 1
    contour: str | None = None
    prompt: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {FAMILIES}")
        if self.contour is not None and self.contour not in CONTOURS:
            raise ValueError(f"unknown contour {self.contour!r}; expected one of {CONTOURS}")
        if not 1 <= self.count <= MAX_EVENTS:
            raise ValueError(f"count must be in 1..{MAX_EVENTS}, got {self.count}")
        if self.contour is not None and (self.count < 2 or self.events[0].timbre == DRUM):
            raise ValueError("a contour needs at least two pitched notes")
        if not self.prompt:
            object.__setattr__(self, "prompt", describe(self))

    @property
    def expected(self) -> tuple[EventSpec, ...]:
        """The events the clip must contain, in order."""
        return self.events if len(self.events) > 1 else self.events * self.count

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (per-sample metadata and prompt files)."""
        return {"family": self.family, "prompt": self.prompt, "count": self.count, "contour": self.contour,
                "events": [{"timbre": e.timbre, "register": e.register, "chord": e.chord} for e in self.events]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(family=data["family"], events=tuple(EventSpec(**e) for e in data["events"]),
                   count=int(data.get("count", 1)), contour=data.get("contour"), prompt=data.get("prompt", ""))


def _event_phrase(event: EventSpec, count: int = 1) -> str:
    if event.timbre == DRUM:
        return "a drum hit" if count == 1 else f"{NUMBER_WORDS[count]} drum hits"
    noun = "chord" if event.chord else "note"
    words = " ".join(w for w in (event.register, event.timbre) if w)
    return f"a {words} {noun}" if count == 1 else f"{NUMBER_WORDS[count]} {words} {noun}s"


def describe(spec: AudioSpec) -> str:
    """The prompt text of a spec, e.g. ``"three plucked notes rising"`` or ``"a low sine note then a drum hit"``."""
    if spec.family == "sequence":
        return " then ".join(_event_phrase(e) for e in spec.events)
    phrase = _event_phrase(spec.events[0], spec.count)
    return f"{phrase} {spec.contour}" if spec.contour else phrase


def vocabulary() -> list[str]:
    """Every word a toy audio prompt can contain."""
    words = {"a", "note", "notes", "chord", "drum", "hit", "hits", "then"}
    words |= set(PITCHED) | set(REGISTERS) | set(CONTOURS) | set(NUMBER_WORDS.values())
    return sorted(words)
