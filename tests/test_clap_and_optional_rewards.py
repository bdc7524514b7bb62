"""CLAP text-audio reward through the real transformers loaders on a tiny ClapModel; optional-package rewards."""

import importlib.util

import numpy as np
import pytest
import torch
from helpers.tiny_models import save_tiny_clap

from rewards import build_reward
from rewards.base import to_audio_tensor
from rewards.clap import resample
from rewards.optional import MissingExtraError


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("clap")
    save_tiny_clap(path)
    return str(path)


def test_clap_score_is_the_models_audio_text_cosine(clap_dir):
    reward = build_reward("clap", model=clap_dir, sample_rate=48_000)
    waves = torch.randn(3, 48_000, generator=torch.Generator().manual_seed(0)) * 0.1
    prompts = ["a dog barking", "rain on a window", "a piano melody"]
    scores = reward(waves, prompts).scores
    # tokenizer and feature extractor called apart: through the joint processor call, padding=True also
    # reaches the feature extractor, which transformers 5.17 took as an audio padding mode (zero padding)
    text = reward.processor.tokenizer(prompts, padding=True, return_tensors="pt")
    audio = reward.processor.feature_extractor(list(waves.numpy()), sampling_rate=48_000, return_tensors="pt")
    with torch.no_grad():
        out = reward.model(**text, **audio)
    expected = out.logits_per_audio.diagonal() / reward.model.logit_scale_a.exp()
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    assert ((scores >= -1) & (scores <= 1)).all()
    # batching and input type (list of stereo numpy arrays -> mono) do not change a score
    stereo = [np.stack([w.numpy(), w.numpy()]) for w in waves]
    torch.testing.assert_close(torch.cat([reward([stereo[i]], prompts[i:i + 1]).scores for i in range(3)]), scores)


def test_resampling_keeps_the_pitch_and_scales_the_length():
    t = torch.arange(16_000) / 16_000
    tone = torch.sin(2 * torch.pi * 1000 * t)[None]
    up = resample(tone, 16_000, 48_000)
    assert up.shape == (1, 48_000)
    spectrum = torch.fft.rfft(up[0]).abs()
    assert spectrum.argmax().item() == 1000  # bin k is k Hz for a one-second signal
    assert resample(tone, 48_000, 48_000) is tone


def test_waveform_batches_are_checked():
    with pytest.raises(ValueError, match="differ in length"):
        to_audio_tensor([np.zeros(10), np.zeros(12)])
    with pytest.raises(ValueError, match="shape"):
        to_audio_tensor(torch.zeros(2, 2, 2, 2))


@pytest.mark.skipif(importlib.util.find_spec("laion_clap") is not None, reason="laion_clap is installed")
def test_laion_clap_backend_names_its_extra_when_missing():
    with pytest.raises(MissingExtraError, match=r"\.\[clap\]"):
        build_reward("clap", backend="laion_clap", model="music_audioset_epoch_15_esc_90.14.pt")

