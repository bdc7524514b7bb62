"""The aesthetics-style audio predictor (``audio_aesthetic``): it learns a rating the toy CLAP can hear, the reward
is the head on the chunk-averaged CLAP embedding, predictor folders are written atomically and checked on load,
and bad ratings files are one-line errors naming the line."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rewards import build_reward
from rewards.audio_aesthetic import (
    PREDICTOR_CONFIG,
    RatingHead,
    chunk_averaged_embeddings,
    fit_rating_head,
    load_predictor,
    save_predictor,
)
from rewards.audio_frames import ClapFrames, int16_round_trip
from rewards.toyaudio.prompts import all_specs
from rewards.toyaudio.render import render
from rewards.toyaudio.world import SAMPLE_RATE

ROOT = Path(__file__).resolve().parent.parent
REGISTER_RATING = {"low": 0.0, "middle": 1.0, "high": 2.0}


def _script():
    spec = importlib.util.spec_from_file_location("train_audio_aesthetic", ROOT / "scripts" / "train_audio_aesthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def register_data():
    """Renders of the register prompts (3 seeds each), their toy-CLAP embeddings, and the register as a rating."""
    specs = all_specs()["register"]
    clips = torch.tensor(np.stack([render(s, seed) for seed in range(3) for s in specs]), dtype=torch.float32)
    ratings = torch.tensor([REGISTER_RATING[s.events[0].register] for _ in range(3) for s in specs])
    frames = ClapFrames(SAMPLE_RATE, model="toy")
    return clips, chunk_averaged_embeddings(frames, clips), ratings


def test_fit_learns_a_rating_the_clap_hears(register_data):
    _, embeds, ratings = register_data
    n = len(ratings)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    val, train = order[:n // 4], order[n // 4:]
    head, figures = fit_rating_head(embeds, ratings, train, val, steps=600)
    assert figures["val_spearman"] > 0.8
    assert figures["val_mse"] < 0.3 * figures["val_mse_of_mean"]
    with torch.no_grad():
        assert F.mse_loss(head(embeds[val]), ratings[val]).item() == pytest.approx(figures["val_mse"], rel=1e-5)


def test_reward_is_the_head_on_chunk_averaged_windows(tmp_path, register_data):
    clips, _, _ = register_data
    torch.manual_seed(0)
    head = RatingHead(64, (16,))
    save_predictor(tmp_path / "p", head, {"clap_model": "toy", "window_s": 0.25, "hop_s": 0.125, "embed_dim": 64,
                                          "hidden": [16]})
    reward = build_reward("audio_aesthetic", predictor=str(tmp_path / "p"), sample_rate=SAMPLE_RATE)
    batch = clips[:3]
    scores = reward(batch, [""] * 3).scores
    # independently: 8 windows of 2,000 samples every 1,000 (the last one zero-padded), 16-bit PCM, CLAP, mean
    expected = []
    for clip in int16_round_trip(batch):
        windows = torch.stack([F.pad(clip[s:s + 2000], (0, 2000 - clip[s:s + 2000].numel()))
                               for s in range(0, 8000, 1000)])
        emb = reward.frames.clap.embed_audio(windows)
        expected.append(head(F.normalize(emb.mean(0), dim=0)).item())
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_predictor_folder_is_replaced_whole_and_checked_on_load(tmp_path):
    config = {"clap_model": "toy", "window_s": 0.25, "hop_s": 0.125, "embed_dim": 8, "hidden": [4]}
    first = save_predictor(tmp_path / "p", RatingHead(8, [4]), config)
    save_predictor(tmp_path / "p", RatingHead(8, [4]), {**config, "note": "second"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temporary or old folder left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(first.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's private mode
    assert stat.S_IMODE((first / PREDICTOR_CONFIG).stat().st_mode) == 0o666 & ~umask
    head, loaded = load_predictor(first)
    assert loaded["note"] == "second" and isinstance(head, RatingHead)
    (first / PREDICTOR_CONFIG).write_text(json.dumps({**config, "hidden": [5]}))
    with pytest.raises(ValueError, match="weights do not match its config"):
        load_predictor(first)
    (first / PREDICTOR_CONFIG).write_text(json.dumps({"clap_model": "toy"}))
    with pytest.raises(ValueError, match="lacks"):
        load_predictor(first)
    with pytest.raises(FileNotFoundError, match="train_audio_aesthetic"):
        load_predictor(tmp_path / "missing")


def test_ratings_csv_errors_name_the_line(tmp_path):
    from scipy.io import wavfile

    script = _script()
    wavfile.write(tmp_path / "a.wav", SAMPLE_RATE, (0.1 * np.sin(np.arange(800) / 5)).astype(np.float32))
    wavfile.write(tmp_path / "silent.wav", SAMPLE_RATE, np.zeros(800, dtype=np.float32))
    cases = {"file,score\na.wav,1\n": "columns 'path' and 'rating'",
             "path,rating\na.wav,1\na.wav,good\n": "line 3: rating 'good' is not a number",
             "path,rating\nb.wav,1\n": "line 2: clip .*b.wav not found",
             "path,rating\nsilent.wav,1\n": "line 2: clip .*silent or not finite",
             "path,rating\na.wav,1\n": "1 rated clips; fit on at least 10"}
    for i, (text, message) in enumerate(cases.items()):
        (tmp_path / f"r{i}.csv").write_text(text)
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            script.read_ratings(tmp_path / f"r{i}.csv", SAMPLE_RATE)
    with pytest.raises(SystemExit):
        script.main(["--ratings", str(tmp_path / "r1.csv"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_fit_rejects_overlapping_or_poisoned_input():
    embeds, ratings = torch.randn(6, 4), torch.arange(6.0)
    with pytest.raises(ValueError, match="disjoint"):
        fit_rating_head(embeds, ratings, [0, 1, 2], [2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        fit_rating_head(embeds, torch.tensor([0, 1, float("nan"), 3, 4, 5.0]), [0, 1, 2], [3, 4])
