"""The analytic verifier of the toy audio world: onsets by energy, pitch by harmonic salience, timbre by
noisiness, decay and overtones.

1. **Events**: frame RMS (20 ms frames, 10 ms hop); frames above a tenth of the loudest frame (and above an
   absolute floor, so silence has no events) form events, gaps under 30 ms are closed, events under 40 ms dropped.
2. **Per event**, on its first 300 ms (Hann window, zero-padded FFT):
   - a drum hit if the spectrum is noise-like (spectral flatness above 0.3);
   - otherwise its pitches: the pitch on the world's 40 Hz grid (harmonic numbers 3-40, 120-1,600 Hz, a little
     beyond the registers so out-of-register notes are read as such) whose harmonics carry the most spectral
     energy (each harmonic k weighted 1/k, within +-16 Hz: 0.4 of the grid step), then the same again with that
     pitch's harmonics removed; a further pitch counts when its salience is at least a quarter of the first's
     and it is 3+ semitones from those found. Two or more pitches: a chord, its root the lowest;
   - timbre: plucked if the event decays (the RMS of its last third below 0.6 of its first third's), else
     square if overtones (energy above 1.6 times the highest pitch) hold at least 4 % of the event's energy,
     else sine;
   - register: of the root, by octave on the grid (harmonics 4-7 low, 8-15 middle, 16-31 high).
3. **Checks** per family (strict: all pass; partial: their mean): the number of events (counting gives
   ``1 - |n_found - n| / n``), each expected event's timbre, register and chord-ness in order, and a melody's
   contour (strictly rising or falling pitches).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .world import DRUM, NUM_SAMPLES, PITCH_GRID_HZ, SAMPLE_RATE, AudioSpec, EventSpec, pitch_hz, register_of

FRAME, HOP = int(0.02 * SAMPLE_RATE), int(0.01 * SAMPLE_RATE)
RELATIVE_THRESHOLD, ABSOLUTE_FLOOR = 0.1, 1e-3
MIN_GAP_FRAMES, MIN_EVENT_FRAMES = 3, 4
ANALYSIS_S, FFT_SIZE = 0.3, 16384
FLATNESS_DRUM = 0.3
CANDIDATES = range(3, 41)  # harmonic numbers of the pitch grid the salience search considers
BAND_HZ = 0.4 * PITCH_GRID_HZ  # half-width of the band a harmonic's energy is summed over
HARMONICS = 8
SECOND_PITCH = 0.25
MIN_INTERVAL = 2.0 ** (2.5 / 12)  # a chord's notes are at least 3 semitones apart (4:5:6 has 3.9 and 3.2)
DECAY_RATIO, OVERTONE_SHARE = 0.6, 0.04


@dataclass(frozen=True)
class DetectedEvent:
    """One sound event the verifier found: start and end (seconds), timbre, pitches (harmonic numbers of the pitch
    grid, lowest first)."""

    start: float
    end: float
    timbre: str
    pitches: tuple[int, ...] = ()

    @property
    def chord(self) -> bool:
        return len(self.pitches) >= 2

    @property
    def register(self) -> str | None:
        return register_of(self.pitches[0]) if self.pitches else None


@dataclass
class Verdict:
    """``strict`` (0/1), ``partial`` in [0, 1], the first failed check as ``reason``, and what was found."""

    strict: float
    partial: float
    reason: str
    events: list[DetectedEvent] = field(default_factory=list)


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    n = 1 + max(0, len(audio) - FRAME) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(audio, FRAME)[::HOP][:n]
    return np.sqrt((frames.astype(np.float64) ** 2).mean(1))


def _segments(rms: np.ndarray) -> list[tuple[int, int]]:
    """Frame ranges ``[a, b)`` of the events."""
    if rms.max() < ABSOLUTE_FLOOR:
        return []
    loud = rms > max(RELATIVE_THRESHOLD * rms.max(), ABSOLUTE_FLOOR)
    runs, start = [], None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append([start, i])
            start = None
    if start is not None:
        runs.append([start, len(loud)])
    merged: list[list[int]] = []
    for run in runs:
        if merged and run[0] - merged[-1][1] < MIN_GAP_FRAMES:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    return [(a, b) for a, b in merged if b - a >= MIN_EVENT_FRAMES]


def _band_energy(power: np.ndarray, freq: float) -> float:
    """Spectral power within :data:`BAND_HZ` of ``freq``."""
    lo = int((freq - BAND_HZ) * FFT_SIZE / SAMPLE_RATE)
    hi = int(np.ceil((freq + BAND_HZ) * FFT_SIZE / SAMPLE_RATE)) + 1
    return float(power[lo:hi].sum()) if lo < len(power) else 0.0


def _pitches(power: np.ndarray, lobe_hz: float) -> tuple[int, ...]:
    """Iterative harmonic-salience pitch estimation (see the module docstring); ``lobe_hz`` is the half-width of
    the analysis window's main lobe, removed with each harmonic of a chosen note."""
    power = power.copy()
    found: list[int] = []
    first = None
    for _ in range(3):
        saliences = []
        for h in CANDIDATES:
            f0 = pitch_hz(h)
            near = any(max(h, f) / min(h, f) < MIN_INTERVAL for f in found)
            saliences.append(0.0 if near else sum(_band_energy(power, k * f0) / k for k in range(1, HARMONICS + 1)
                                                  if k * f0 < SAMPLE_RATE / 2))
        best = int(np.argmax(saliences))
        value = saliences[best]
        if first is None:
            first = value
        elif value < SECOND_PITCH * first:
            break
        found.append(CANDIDATES[best])
        f0 = pitch_hz(CANDIDATES[best])
        for h in range(1, int(SAMPLE_RATE / 2 / f0) + 1):  # remove every harmonic of the chosen pitch
            width = max(BAND_HZ, lobe_hz)
            lo = max(0, int((h * f0 - width) * FFT_SIZE / SAMPLE_RATE))
            power[lo:int(np.ceil((h * f0 + width) * FFT_SIZE / SAMPLE_RATE)) + 1] = 0.0
    return tuple(sorted(found))


def _analyse(audio: np.ndarray, a: int, b: int) -> DetectedEvent:
    start, end = a * HOP, min(len(audio), (b - 1) * HOP + FRAME)
    segment = audio[start:end].astype(np.float64)
    head = segment[:int(ANALYSIS_S * SAMPLE_RATE)]
    power = np.abs(np.fft.rfft(head * np.hanning(len(head)), FFT_SIZE)) ** 2
    band = power[int(60 * FFT_SIZE / SAMPLE_RATE):]  # flatness above 60 Hz, where every note has its energy
    flatness = float(np.exp(np.log(band + 1e-20).mean()) / (band.mean() + 1e-20))
    times = (start / SAMPLE_RATE, end / SAMPLE_RATE)
    if flatness > FLATNESS_DRUM:
        return DetectedEvent(*times, DRUM)
    pitches = _pitches(power, lobe_hz=2.0 * SAMPLE_RATE / len(head))
    third = max(1, len(segment) // 3)
    first_rms = np.sqrt((segment[:third] ** 2).mean())
    last_rms = np.sqrt((segment[-third:] ** 2).mean())
    if last_rms < DECAY_RATIO * first_rms:
        timbre = "plucked"
    else:
        cutoff = 1.6 * pitch_hz(max(pitches))
        share = power[int(cutoff * FFT_SIZE / SAMPLE_RATE):].sum() / (power.sum() + 1e-20)
        timbre = "square" if share >= OVERTONE_SHARE else "sine"
    return DetectedEvent(*times, timbre, pitches)


def detect(audio: np.ndarray) -> list[DetectedEvent]:
    """The sound events of a clip, in time order."""
    audio = _checked(audio)
    return [_analyse(audio, a, b) for a, b in _segments(_frame_rms(audio))]


def _checked(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.shape[0] != NUM_SAMPLES:
        raise ValueError(f"the toy audio verifier scores mono clips of {NUM_SAMPLES} samples "
                         f"({SAMPLE_RATE} Hz, one second); got shape {tuple(audio.shape)}")
    if not np.isfinite(audio).all():
        raise ValueError("the clip contains NaN or infinite samples")
    return audio


def _event_checks(want: EventSpec, got: DetectedEvent, label: str) -> list[tuple[float, str]]:
    checks = [(float(got.timbre == want.timbre), f"{label}: expected {want.timbre}, found {got.timbre}")]
    if want.timbre != DRUM:
        checks.append((float(got.chord == want.chord),
                       (f"{label}: expected {'a chord' if want.chord else 'a single note'}, found "
                        f"{len(got.pitches)} pitches")))
    if want.register is not None:
        checks.append((float(got.register == want.register),
                       f"{label}: expected the {want.register} register, found {got.register}"))
    return checks


def _num_checks(want: EventSpec) -> int:
    """How many checks :func:`_event_checks` makes of an expected event."""
    return 1 + (want.timbre != DRUM) + (want.register is not None)


def verify(audio: np.ndarray, spec: AudioSpec) -> Verdict:
    """Score a clip (float ``(NUM_SAMPLES,)`` at :data:`SAMPLE_RATE`) against ``spec``."""
    return verify_events(detect(audio), spec)


def verify_events(events: list[DetectedEvent], spec: AudioSpec) -> Verdict:
    """Score a clip's detected events (:func:`detect`) against ``spec``: one detection, many specs."""
    expected = spec.expected
    n, found = len(expected), len(events)
    if spec.family == "counting":
        count_score = max(0.0, 1 - abs(found - n) / n)
    else:
        count_score = float(found == n)
    checks: list[tuple[float, str]] = [(count_score, f"expected {n} events, found {found}")]
    if spec.family == "counting":  # as the image world's counting: the count and the kind of event
        checks.append((float(bool(events) and all(e.timbre == expected[0].timbre for e in events)),
                       f"expected only {expected[0].timbre} events"))
    else:
        for i, want in enumerate(expected):  # a wrong count: the expected events are judged on those there are
            checks += (_event_checks(want, events[i], f"event {i + 1}") if i < found
                       else [(0.0, f"event {i + 1}: missing")] * _num_checks(want))
    if spec.contour is not None:
        roots = [e.pitches[0] for e in events if e.pitches]
        steps = np.diff(roots) if len(roots) == found and found >= 2 else np.array([])
        ok = steps.size > 0 and (bool((steps > 0).all()) if spec.contour == "rising" else bool((steps < 0).all()))
        checks.append((float(ok), f"expected the notes {spec.contour}, found pitches {roots}"))
    scores = [c for c, _ in checks]
    failed = [why for c, why in checks if c < 1]
    strict = float(not failed)
    return Verdict(strict, float(np.mean(scores)), failed[0] if failed else "ok", events)
