"""Procedural clips of the toy audio world: each prompt's events laid out in time, synthesised exactly.

Events are placed in equal slots of the one-second clip, each sounding for 120 ms to most of its slot with at
least 40 ms of silence between events, so onsets can be counted. Pitches are drawn per clip: in the named
register, or anywhere in the three registers when none is named; a melody's pitches move 2-5 semitones per
note in its direction. Timbres: a sine; a band-limited square (odd harmonics 1/k up to 3.8 kHz); a plucked tone
(every harmonic 1/k, exponentially decaying, the higher ones faster); a drum hit (white noise with a 30 ms
decay). Each clip has one random gain in [0.4, 0.8].
"""

from __future__ import annotations

import numpy as np

from .world import CHORD_INTERVALS, DRUM, NUM_SAMPLES, REGISTERS, SAMPLE_RATE, AudioSpec, EventSpec

#: Harmonics are synthesised up to this frequency (below the 4 kHz Nyquist frequency)
MAX_PARTIAL_HZ = 3800.0
#: Silence kept between consecutive events, and the shortest event
MIN_GAP_S, MIN_EVENT_S = 0.04, 0.12
#: The plucked tone's decay time constant (its fundamental's; harmonic k decays k**0.5 times faster)
PLUCK_TAU_S = 0.06
DRUM_TAU_S = 0.03
FADE_S = 0.005  # attack and release ramps, so no event starts or ends with a click


def midi_to_hz(midi: float) -> float:
    """The equal-tempered frequency of a MIDI note (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _tone(timbre: str, freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    if timbre == DRUM:
        return rng.standard_normal(n) * np.exp(-t / DRUM_TAU_S) * 0.5
    phase = rng.uniform(0, 2 * np.pi)
    if timbre == "sine":
        return np.sin(2 * np.pi * freq * t + phase)
    ks = range(1, int(MAX_PARTIAL_HZ // freq) + 1)
    if timbre == "square":
        return sum(np.sin(2 * np.pi * k * freq * t + k * phase) / k for k in ks if k % 2) * (4 / np.pi) * 0.6
    if timbre == "plucked":
        return sum(np.sin(2 * np.pi * k * freq * t + k * phase) / k * np.exp(-t * np.sqrt(k) / PLUCK_TAU_S)
                   for k in ks)
    raise ValueError(f"unknown timbre {timbre!r}")


def _envelope(n: int) -> np.ndarray:
    fade = max(1, int(FADE_S * SAMPLE_RATE))
    env = np.ones(n)
    env[:fade] = np.linspace(0, 1, fade)
    env[-fade:] = np.minimum(env[-fade:], np.linspace(1, 0, fade))
    return env


def _pitches(spec: AudioSpec, rng: np.random.Generator) -> list[int | None]:
    """One MIDI root per expected event (None for a drum hit)."""
    events = spec.expected
    if spec.contour is not None:  # a melody: 2-5 semitones per step in its direction, inside C3-B5
        steps = rng.integers(2, 6, size=len(events) - 1)
        span = int(steps.sum())
        low, high = REGISTERS["low"].start, REGISTERS["high"].stop - 1
        start = int(rng.integers(low, high - span + 1))
        pitches = np.concatenate([[start], start + np.cumsum(steps)])
        return [int(p) for p in (pitches if spec.contour == "rising" else pitches[::-1])]
    out: list[int | None] = []
    for event in events:
        if event.timbre == DRUM:
            out.append(None)
            continue
        register = REGISTERS[event.register] if event.register else range(REGISTERS["low"].start,
                                                                          REGISTERS["high"].stop)
        out.append(int(rng.integers(register.start, register.stop)))
    return out


def render_event(event: EventSpec, midi: int | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of one event (a chord: its triad, each note at a third of the amplitude times 1.5)."""
    if event.timbre == DRUM:
        return _tone(DRUM, 0.0, n, rng) * _envelope(n)
    notes = [midi + i for i in CHORD_INTERVALS] if event.chord else [midi]
    sound = sum(_tone(event.timbre, midi_to_hz(m), n, rng) for m in notes) * (1.5 / len(notes) if event.chord else 1)
    return sound * _envelope(n)


def render(spec: AudioSpec, seed: int | np.random.Generator = 0) -> np.ndarray:
    """A ground-truth clip of ``spec``: float32 ``(NUM_SAMPLES,)`` in [-1, 1]."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    events = spec.expected
    pitches = _pitches(spec, rng)
    slot = NUM_SAMPLES // len(events)
    gap, shortest = int(MIN_GAP_S * SAMPLE_RATE), int(MIN_EVENT_S * SAMPLE_RATE)
    longest = slot - gap if len(events) > 1 else int(0.6 * SAMPLE_RATE)
    clip = np.zeros(NUM_SAMPLES)
    for i, (event, midi) in enumerate(zip(events, pitches, strict=True)):
        n = int(rng.integers(shortest, longest + 1))
        start = i * slot + int(rng.integers(0, slot - n - (gap if i < len(events) - 1 else 0) + 1))
        clip[start:start + n] += render_event(event, midi, n, rng)
    peak = np.abs(clip).max()
    gain = rng.uniform(0.4, 0.8)
    return (clip / peak * gain).astype(np.float32) if peak > 0 else clip.astype(np.float32)


def render_batch(specs: list[AudioSpec], seed: int = 0) -> np.ndarray:
    """``(N, NUM_SAMPLES)`` clips, one generator for the batch."""
    rng = np.random.default_rng(seed)
    return np.stack([render(s, rng) for s in specs])
