"""The toy audio world: prompts and splits, the synthesiser, and the verifier (exact on renders, near chance on
mismatched prompts, robust to noise, checked on hand-built tones), and the verifier as a reward."""

import numpy as np
import pytest
import torch

from rewards.media import Media
from rewards.toy_audio_verifier import ToyAudioVerifierReward
from rewards.toyaudio import (
    NUM_SAMPLES,
    SAMPLE_RATE,
    AudioSpec,
    EventSpec,
    all_specs,
    detect,
    render,
    split,
    verify,
)
from rewards.toyaudio.prompts import spec_from_prompt

ALL = [s for specs in all_specs().values() for s in specs]
T = np.arange(NUM_SAMPLES) / SAMPLE_RATE


def _hz(harmonic):
    return 40.0 * harmonic  # the world's pitch grid, written out independently of rewards.toyaudio.world


def _gate(x, start=0.2, end=0.6):
    return np.where((T >= start) & (T < end), x, 0.0).astype(np.float32)


def test_prompts_round_trip_and_read_as_music():
    assert len({s.prompt for s in ALL}) == len(ALL)
    assert all(spec_from_prompt(s.prompt) == s for s in ALL)
    assert all(AudioSpec.from_dict(s.to_dict()) == s for s in ALL)
    texts = {s.prompt for s in ALL}
    assert {"a drum hit", "a low sine note", "three plucked notes rising", "a high square chord",
            "a low sine note then a high plucked note", "four drum hits"} <= texts
    with pytest.raises(ValueError, match="drum hit has no register"):
        EventSpec("drum", "low")
    with pytest.raises(ValueError, match="contour needs at least two pitched"):
        AudioSpec("melody", (EventSpec("drum"),), count=3, contour="rising")
    with pytest.raises(KeyError, match="not a toy audio prompt"):
        spec_from_prompt("a violin")


def test_splits_hold_out_a_third_of_each_family_from_rl_only():
    train, test = set(split("train")), set(split("test"))
    singles = set(all_specs()["single_note"])
    assert train & test == singles and train | test == set(ALL)
    def named(s):  # every timbre, register, chord-ness, count and contour a prompt names, each on its own
        return {("timbre", e.timbre) for e in s.events} | {("register", e.register) for e in s.events} | \
            {("chord", e.chord) for e in s.events} | {("count", s.count), ("contour", s.contour)}

    seen = set().union(*map(named, train))
    assert all(named(s) <= seen for s in test)
    for family, specs in all_specs().items():
        if family != "single_note":
            held = sum(s in test for s in specs)
            assert held == max(1, round(len(specs) / 3))


def test_renders_are_mono_one_second_and_reproducible():
    clip = render(ALL[10], seed=3)
    assert clip.shape == (NUM_SAMPLES,) and clip.dtype == np.float32 and np.abs(clip).max() <= 0.8 + 1e-6
    assert np.array_equal(clip, render(ALL[10], seed=3)) and not np.array_equal(clip, render(ALL[10], seed=4))


def _event_peaks(clip):
    """The strongest frequency (Hz) of each sounding stretch of a clip, by a plain FFT."""
    loud = np.convolve(np.abs(clip) > 1e-3, np.ones(80), "same") > 0
    edges = np.flatnonzero(np.diff(np.r_[0, loud.astype(int), 0]))
    peaks = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        spectrum = np.abs(np.fft.rfft(clip[a:b], 1 << 16))
        peaks.append(np.argmax(spectrum) * SAMPLE_RATE / (1 << 16))
    return peaks


@pytest.mark.parametrize("prompt, lo, hi", [("a low sine note", 160, 280), ("a middle sine note", 320, 600),
                                            ("a high sine note", 640, 1240)])
def test_rendered_pitches_are_harmonics_of_40_hz_in_their_register(prompt, lo, hi):
    for seed in range(8):
        clip = render(spec_from_prompt(prompt), seed=seed)
        (peak,) = _event_peaks(clip)
        harmonic = round(peak / 40)
        assert abs(peak - 40 * harmonic) < 1.5 and lo <= 40 * harmonic <= hi
        # so a held note repeats every 200 samples: the toy VAE's hop, one latent frame
        start = np.flatnonzero(np.abs(clip) > 1e-3)[0] + 100
        assert np.allclose(clip[start:start + 400], clip[start + 200:start + 600], atol=1e-3)


def test_melodies_step_two_to_five_semitones_and_chords_are_just_triads():
    for seed in range(8):
        peaks = _event_peaks(render(spec_from_prompt("four sine notes rising"), seed=seed))
        ratios = np.array(peaks[1:]) / np.array(peaks[:-1])
        assert len(peaks) == 4 and ((ratios > 2 ** (1.9 / 12)) & (ratios < 2 ** (5.1 / 12))).all()
        falling = _event_peaks(render(spec_from_prompt("three plucked notes falling"), seed=seed))
        assert len(falling) == 3 and np.all(np.diff(falling) < 0)
        chord = render(spec_from_prompt("a middle sine chord"), seed=seed)
        spectrum = np.abs(np.fft.rfft(chord, 1 << 16))
        top = sorted(np.argsort(spectrum)[::-1][:200] * SAMPLE_RATE / (1 << 16))
        notes = sorted({round(f / 40) for f in top})
        assert len(notes) == 3 and notes[0] in (8, 12) and notes[1:] == [notes[0] * 5 // 4, notes[0] * 3 // 2]


def test_the_verifier_passes_every_render_and_almost_no_mismatched_prompt():
    rng = np.random.default_rng(0)
    clips = [(s, render(s, rng)) for s in ALL * 3]
    passed = [verify(c, s).strict for s, c in clips]
    assert np.mean(passed) >= 0.99, [s.prompt for (s, _), ok in zip(clips, passed, strict=True) if not ok][:5]
    others = np.random.default_rng(1)
    wrong = [verify(c, ALL[(ALL.index(s) + 1 + int(others.integers(len(ALL) - 1))) % len(ALL)]).strict
             for s, c in clips]
    assert np.mean(wrong) <= 0.05


def test_the_verifier_survives_noise_at_20_db():
    rng = np.random.default_rng(2)
    ok = []
    for s in ALL:
        x = render(s, rng)
        x = x + rng.standard_normal(x.shape) * np.sqrt((x ** 2).mean()) * 0.1
        ok.append(verify(x.astype(np.float32), s).strict)
    assert np.mean(ok) >= 0.95


def test_hand_built_tones_are_read_by_pitch_timbre_and_register():
    a440 = _gate(0.5 * np.sin(2 * np.pi * 440 * T))  # harmonic 11 of 40 Hz, middle register (320-600 Hz)
    (event,) = detect(a440)
    assert event.timbre == "sine" and event.pitches == (11,) and event.register == "middle"
    assert event.start == pytest.approx(0.2, abs=0.02) and event.end == pytest.approx(0.6, abs=0.03)
    square = _gate(0.4 * sum(np.sin(2 * np.pi * k * _hz(5) * T) / k for k in range(1, 30, 2)))
    assert [(e.timbre, e.pitches, e.register) for e in detect(square)] == [("square", (5,), "low")]
    decay = np.exp(-np.clip(T - 0.2, 0, None) / 0.05)
    pluck = _gate(0.5 * decay * sum(np.sin(2 * np.pi * k * _hz(19) * T) / k for k in range(1, 5)))
    assert [(e.timbre, e.pitches, e.register) for e in detect(pluck)] == [("plucked", (19,), "high")]
    triad = _gate(0.2 * sum(np.sin(2 * np.pi * _hz(h) * T) for h in (8, 10, 12)))  # 4:5:6 on 320 Hz
    (chord,) = detect(triad)
    assert chord.chord and chord.pitches == (8, 10, 12)
    low = _gate(0.5 * np.sin(2 * np.pi * 120 * T))  # below the low register: found, and in no register
    assert [(e.pitches, e.register) for e in detect(low)] == [((3,), None)]
    noise = _gate(0.3 * np.random.default_rng(0).standard_normal(NUM_SAMPLES) * np.exp(-np.clip(T - 0.2, 0, None) / 0.03))
    assert [e.timbre for e in detect(noise)] == ["drum"]
    two = a440 + _gate(0.5 * np.sin(2 * np.pi * _hz(9) * T), 0.7, 0.9)
    assert [e.pitches for e in detect(two)] == [(11,), (9,)]
    assert verify(two, spec_from_prompt("two sine notes falling")).strict == 1.0
    off_grid = _gate(0.5 * np.sin(2 * np.pi * 446 * T))  # 6 Hz sharp: still read as the nearest grid pitch
    assert [e.pitches for e in detect(off_grid)] == [(11,)]
    assert verify(two, spec_from_prompt("two sine notes rising")).strict == 0.0


def test_silence_and_bad_clips():
    silent = verify(np.zeros(NUM_SAMPLES, np.float32), spec_from_prompt("a sine note"))
    assert silent.strict == 0.0 and silent.events == [] and "found 0" in silent.reason
    with pytest.raises(ValueError, match="8000 samples"):
        verify(np.zeros(4000, np.float32), spec_from_prompt("a sine note"))
    with pytest.raises(ValueError, match="NaN"):
        verify(np.full(NUM_SAMPLES, np.nan, np.float32), spec_from_prompt("a sine note"))


def test_the_reward_scores_media_and_flags_bad_clips():
    specs = [spec_from_prompt("a middle sine note then a drum hit"), spec_from_prompt("three square notes")]
    clips = torch.from_numpy(np.stack([render(s, seed=i) for i, s in enumerate(specs)]))
    media = Media(clips[:, None], "audio", sample_rate=SAMPLE_RATE)
    strict = ToyAudioVerifierReward("strict")
    out = strict(media, [s.prompt for s in specs], [{"spec": s.to_dict()} for s in specs])
    assert out.scores.tolist() == [1.0, 1.0]
    swapped = ToyAudioVerifierReward("partial")(media, [specs[1].prompt, specs[0].prompt])
    assert (swapped.scores < 1).all()
    bad = clips.clone()
    bad[0, 100] = float("nan")
    flagged = strict(Media(bad[:, None], "audio", sample_rate=SAMPLE_RATE), [s.prompt for s in specs])
    assert torch.isnan(flagged.scores[0]) and flagged.scores[1] == 1.0 and flagged.info["reason"][0] == "non-finite samples"
    with pytest.raises(ValueError, match="8000 Hz"):
        strict(Media(clips[:, None], "audio", sample_rate=16000), [s.prompt for s in specs])
    with pytest.raises(ValueError, match="clips of 8000 samples"):
        strict(Media(clips[:, None, :4000], "audio", sample_rate=SAMPLE_RATE), [s.prompt for s in specs])
