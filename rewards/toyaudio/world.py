"""The vocabulary of the toy audio world and the structured specs behind its prompts.

Clips are one second of mono audio at 8 kHz: a few notes (sine, square or plucked tones, or noise-burst drum
hits), alone, in sequence or as a chord, described by prompts in six GenEval-like families. A prompt is always
built from an :class:`AudioSpec`, so the verifier scores a clip against the spec instead of parsing text.

Why 8 kHz and one second: four notes of 120-200 ms with gaps fit, every register's fundamental and the
overtones that tell the timbres apart (up to the third harmonic of the highest note, 3.72 kHz) lie below the
4 kHz Nyquist frequency, and a clip is short enough (8,000 samples) for a tiny Stable Audio model on a CPU.

Why pitches are harmonics of 40 Hz, not equal-tempered notes: the toy VAE turns every 200 samples (its hop) into
one latent frame, 40 frames a second, and a convolutional decoder turns a steady latent into a signal periodic in
its hop. A held note is therefore a steady latent (what a tiny DiT can draw) only when its period divides the hop,
i.e. when its frequency is a multiple of 40 Hz. On equal-tempered pitches the first edition of this world asked
the DiT to draw every note as an aliased oscillation of its latent frames, and it never learnt melodies
(docs/toy-audio-world.md). The registers are octaves on that grid (harmonics 4-7, 8-15 and 16-31: 160-280 Hz,
320-600 Hz, 640-1,240 Hz) and a chord is the just major triad 4:5:6 on a root that is a multiple of 4.
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

#: Every pitch is a whole multiple (its harmonic number) of this frequency: the toy VAE's latent frame rate
PITCH_GRID_HZ = 40.0
#: Register name -> the harmonic numbers it spans (one octave each: 160-280 Hz, 320-600 Hz, 640-1,240 Hz)
REGISTERS: dict[str, range] = {"low": range(4, 8), "middle": range(8, 16), "high": range(16, 32)}
CONTOURS: tuple[str, ...] = ("rising", "falling")
#: A chord is the just major triad root : major third : fifth = 4 : 5 : 6, so its root's harmonic number is a
#: multiple of 4 and every note of it is on the grid
CHORD_RATIOS: tuple[int, ...] = (4, 5, 6)
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_EVENTS = 4


def pitch_hz(harmonic: float) -> float:
    """The frequency of a pitch given as its harmonic number on the grid."""
    return harmonic * PITCH_GRID_HZ


def chord_harmonics(root: int) -> tuple[int, ...]:
    """The harmonic numbers of the major triad on ``root`` (a multiple of 4)."""
    if root % CHORD_RATIOS[0]:
        raise ValueError(f"a chord's root must be a multiple of {CHORD_RATIOS[0]} on the pitch grid, got {root}")
    return tuple(root * r // CHORD_RATIOS[0] for r in CHORD_RATIOS)


def register_of(harmonic: int) -> str | None:
    """The register a pitch (harmonic number) lies in, or None outside the world's registers."""
    return next((name for name, span in REGISTERS.items() if harmonic in span), None)

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
