"""bench/toy_audio_vae.py: its note clips, its ridge probe and its command line on a saved pipeline."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from genrl.toy.audio_pipeline import TOY_AUDIO_PIPELINE_DIR
from rewards.toyaudio import detect

_path = Path(__file__).resolve().parent.parent / "bench" / "toy_audio_vae.py"
_spec = importlib.util.spec_from_file_location("toy_audio_vae", _path)
vae_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vae_bench)


@pytest.mark.parametrize("timbre", ["sine", "square", "plucked"])
def test_a_note_clip_is_one_event_at_its_pitch(timbre):
    for harmonic in (4, 11, 31):  # the lowest, a middle and the highest pitch of the world
        events = detect(vae_bench.note_clip(timbre, harmonic, seed=harmonic))
        assert len(events) == 1 and events[0].pitches == (harmonic,) and events[0].timbre == timbre


def test_the_ridge_probe_reads_separable_classes_and_not_shuffled_ones():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 20)
    centres = rng.normal(size=(6, 12)) * 3
    x = centres[labels] + rng.normal(size=(len(labels), 12)) * 0.3
    test = np.arange(len(labels)) % 4 == 0
    assert vae_bench.ridge_probe_accuracy(x[~test], labels[~test], x[test], labels[test]) == 1.0
    shuffled = rng.permutation(labels)
    chance = vae_bench.ridge_probe_accuracy(x[~test], shuffled[~test], x[test], shuffled[test])
    assert chance < 0.5


def test_the_lag_one_autocorrelation_tells_a_steady_latent_from_a_changing_one():
    frames = np.arange(40)
    steady = np.stack([np.sin(2 * np.pi * frames / 40 + c) for c in range(3)])[None]  # one slow cycle per note
    alternating = np.stack([(-1.0) ** frames * (c + 1) for c in range(3)])[None]
    assert vae_bench.lag_one_autocorrelation(steady) > 0.9
    assert vae_bench.lag_one_autocorrelation(alternating) == pytest.approx(-1.0)
    x = np.random.default_rng(0).normal(size=(2, 3, 40))
    expected = np.mean([np.corrcoef(row[:-1], row[1:])[0, 1] for clip in x for row in clip])
    assert vae_bench.lag_one_autocorrelation(x) == pytest.approx(expected, abs=0.02)


@pytest.mark.skipif(not (TOY_AUDIO_PIPELINE_DIR / "model_index.json").is_file(), reason="toy audio weights not built")
def test_the_command_reports_the_pitch_map_it_measured(tmp_path, capsys):
    out = tmp_path / "vae.json"
    assert vae_bench.main(["--max-prompts", "2", "--clips-per-prompt", "1", "--timbres", "sine", "--threads", "1",
                           "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    returned = report["pitch_map"]["sine"]["returned"]
    assert len(returned) == 28 and set(report["latent_pitch_probe"]) == {"sine"}
    assert set(report["latent_pitch_probe"]["sine"]) == {"all", "channel_means", "lag_one_autocorrelation"}
    own = np.mean([found == int(pitch) for pitch, found in returned.items()])
    assert report["pitch_map"]["sine"]["own_pitch"] == pytest.approx(own)
    assert 0.0 <= report["round_trip_strict"] <= 1.0 and "round trips (test, 2 clips)" in capsys.readouterr().out


def test_bad_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        vae_bench.main(["--clips-per-prompt", "0"])
    with pytest.raises(SystemExit):
        vae_bench.main(["--timbres", "drum"])
    assert "--timbres: drum is not a pitched timbre" in capsys.readouterr().err
