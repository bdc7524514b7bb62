"""Procedural clips of the toy audio world: each prompt's events laid out in time, synthesised exactly.

Events are placed in equal slots of the one-second clip, each sounding for 120 ms to most of its slot with at
least 40 ms of silence between events, so onsets can be counted. Pitches are harmonics of the world's 40 Hz
grid, drawn per clip: in the named register, or in a register drawn uniformly when none is named; a chord is the
4:5:6 triad on a root (a multiple of 4) in its register; a melody's pitches move 2-5 semitones (frequency ratios
1.12-1.33) per note in its direction. Timbres: a sine; a band-limited square (odd harmonics 1/k up to 3.8 kHz); a plucked tone
(every harmonic 1/k, exponentially decaying, the higher ones faster); a drum hit (white noise with a 30 ms
decay). Each clip has one random gain in [0.4, 0.8].
"""

from __future__ import annotations

import numpy as np

from .world import DRUM, NUM_SAMPLES, REGISTERS, SAMPLE_RATE, AudioSpec, EventSpec, chord_harmonics, pitch_hz

#: Harmonics are synthesised up to this frequency (below the 4 kHz Nyquist frequency)
MAX_PARTIAL_HZ = 3800.0
#: Silence kept between consecutive events, and the shortest event
MIN_GAP_S, MIN_EVENT_S = 0.04, 0.12
#: The plucked tone's decay time constant (its fundamental's; harmonic k decays k**0.5 times faster)
PLUCK_TAU_S = 0.06
DRUM_TAU_S = 0.03
FADE_S = 0.005  # attack and release ramps, so no event starts or ends with a click
#: A melody's step between consecutive notes, as a frequency ratio (2 to 5 equal-tempered semitones)
MELODY_STEP = (2.0 ** (2 / 12), 2.0 ** (5 / 12))
LOWEST, HIGHEST = REGISTERS["low"].start, REGISTERS["high"].stop - 1


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


def _melody(n: int, rng: np.random.Generator) -> list[int]:
    """``n`` rising harmonic numbers inside the registers, each 2-5 semitones above the last; the start is drawn
    in a uniformly drawn register (again when the melody would leave the top register)."""
    while True:
        span = REGISTERS[str(rng.choice(list(REGISTERS)))]
        pitches = [int(rng.integers(span.start, span.stop))]
        while len(pitches) < n:
            last = pitches[-1]
            steps = [h for h in range(last + 1, HIGHEST + 1) if MELODY_STEP[0] <= h / last <= MELODY_STEP[1]]
            if not steps:
                break
            pitches.append(int(rng.choice(steps)))
        if len(pitches) == n:
            return pitches


def _pitches(spec: AudioSpec, rng: np.random.Generator) -> list[int | None]:
    """One root (harmonic number) per expected event (None for a drum hit)."""
    events = spec.expected
    if spec.contour is not None:
        pitches = _melody(len(events), rng)
        return pitches if spec.contour == "rising" else pitches[::-1]
    out: list[int | None] = []
    for event in events:
        if event.timbre == DRUM:
            out.append(None)
            continue
        span = REGISTERS[event.register or str(rng.choice(list(REGISTERS)))]
        choices = [h for h in span if not event.chord or h % 4 == 0]
        out.append(int(rng.choice(choices)))
    return out


def render_event(event: EventSpec, root: int | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of one event at harmonic number ``root`` (a chord: its triad, each note at a third of the
    amplitude times 1.5)."""
    if event.timbre == DRUM:
        return _tone(DRUM, 0.0, n, rng) * _envelope(n)
    notes = chord_harmonics(root) if event.chord else (root,)
    sound = sum(_tone(event.timbre, pitch_hz(h), n, rng) for h in notes) * (1.5 / len(notes) if event.chord else 1)
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
    for i, (event, root) in enumerate(zip(events, pitches, strict=True)):
        n = int(rng.integers(shortest, longest + 1))
        start = i * slot + int(rng.integers(0, slot - n - (gap if i < len(events) - 1 else 0) + 1))
        clip[start:start + n] += render_event(event, root, n, rng)
    peak = np.abs(clip).max()
    gain = rng.uniform(0.4, 0.8)
    return (clip / peak * gain).astype(np.float32) if peak > 0 else clip.astype(np.float32)


def render_batch(specs: list[AudioSpec], seed: int = 0) -> np.ndarray:
    """``(N, NUM_SAMPLES)`` clips, one generator for the batch."""
    rng = np.random.default_rng(seed)
    return np.stack([render(s, rng) for s in specs])
