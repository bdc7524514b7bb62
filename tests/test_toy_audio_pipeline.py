"""The toy audio pipeline (Stable Audio Open architecture): construction, stock loading, the VAE's latent
normalisation, the pretraining losses and an interrupted pretraining's resumption."""


import numpy as np
import pytest
import torch
from diffusers import StableAudioPipeline
from helpers.pretrain_resume import check_resumes_to_the_uninterrupted_run

from genrl.toy import pretrain_audio as pretrain_audio_module
from genrl.toy.audio_pipeline import (
    LATENT_CHANNELS,
    LATENT_LENGTH,
    TOY_AUDIO_PIPELINE_DIR,
    build_toy_audio_pipeline,
    normalise_vae_latents,
)
from genrl.toy.pretrain import PretrainError
from genrl.toy.pretrain_audio import (
    AudioPretrainConfig,
    multiresolution_stft_loss,
    multiscale_mel_loss,
    pretrain_audio,
)
from rewards.toyaudio import NUM_SAMPLES, SAMPLE_RATE, render, split

TINY = dict(vae_steps=4, vae_batch_size=2, vae_warmup_steps=1, normalise_clips=4, latent_pool=8, steps=4, batch_size=4,
            warmup_steps=1, eval_every=0, final_eval_clips_per_prompt=0, checkpoint_every=2, device="cpu")


def test_a_saved_toy_audio_pipeline_loads_and_generates_with_the_stock_pipeline(tmp_path):
    build_toy_audio_pipeline(seed=0).save_pretrained(tmp_path)
    pipe = StableAudioPipeline.from_pretrained(tmp_path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a drum hit", "a high sine note"], num_inference_steps=2,
               generator=[torch.Generator().manual_seed(i) for i in range(2)]).audios
    assert out.shape == (2, 1, NUM_SAMPLES) and not torch.allclose(out[0], out[1])
    assert pipe.vae.config.sampling_rate == SAMPLE_RATE and pipe.vae.hop_length * LATENT_LENGTH == NUM_SAMPLES
    assert pipe.transformer.config.in_channels == LATENT_CHANNELS


def test_a_steady_latent_decodes_to_a_signal_periodic_in_the_pitch_grid():
    """Why the world's pitches are harmonics of 40 Hz: the VAE's latent frame rate is that grid, and its decoder
    (transposed convolutions, then shift-equivariant ones) turns a latent held still into a signal that repeats every
    hop, so a held note on the grid is a steady latent the DiT can draw."""
    from rewards.toyaudio.world import PITCH_GRID_HZ

    vae = build_toy_audio_pipeline(seed=0).vae.eval()
    assert SAMPLE_RATE / vae.hop_length == PITCH_GRID_HZ
    with torch.no_grad():
        steady = torch.randn(1, LATENT_CHANNELS, 1).expand(1, LATENT_CHANNELS, LATENT_LENGTH).contiguous()
        wave = vae.decode(steady).sample[0, 0]
    hop, middle = vae.hop_length, NUM_SAMPLES // 2
    period = wave[middle - hop:middle]
    assert period.abs().max() > 1e-4  # not trivially silent
    torch.testing.assert_close(wave[middle:middle + hop], period, atol=1e-5, rtol=1e-4)
    shifted = wave[middle - hop + 1:middle + 1]
    assert (shifted - period).abs().max() > 10 * (wave[middle:middle + hop] - period).abs().max()


def test_folding_the_latent_statistics_into_the_vae_keeps_its_reconstructions():
    vae = build_toy_audio_pipeline(seed=0).vae.eval()
    x = torch.from_numpy(np.stack([render(s, i) for i, s in enumerate(split("test")[:3])]).astype(np.float32))[:, None]
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        recon = vae.decode(z).sample
        std = z.std(dim=(0, 2))
        normalise_vae_latents(vae, std)
        z_new = vae.encode(x).latent_dist.mean
        recon_new = vae.decode(z_new).sample
    torch.testing.assert_close(z_new, z / std.view(1, -1, 1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(recon_new, recon, atol=1e-5, rtol=1e-4)
    assert (z_new.std(dim=(0, 2)) - 1).abs().max() < 1e-4


def _numpy_log_mel(wave: np.ndarray, window: int, mels: int) -> np.ndarray:
    """log10 mel magnitudes by framing by hand: reflect padding by half a window, Hann (periodic), hop window/4."""
    from transformers.audio_utils import mel_filter_bank

    padded = np.pad(wave, window // 2, mode="reflect")
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    frames = np.stack([padded[i:i + window] * hann for i in range(0, len(padded) - window + 1, window // 4)])
    mags = np.abs(np.fft.rfft(frames, axis=1))  # (frames, bins)
    filters = mel_filter_bank(num_frequency_bins=window // 2 + 1, num_mel_filters=mels, min_frequency=0.0,
                              max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return np.log10(np.maximum(mags @ filters, 1e-5))


def test_the_mel_loss_equals_a_framing_by_hand_and_is_zero_for_identical_clips():
    from genrl.toy.pretrain_audio import MEL_SCALES

    x = render(split("train")[0], 0).astype(np.float64)[:2048]
    y = render(split("train")[5], 1).astype(np.float64)[:2048]
    expected = sum(np.abs(_numpy_log_mel(x, w, m) - _numpy_log_mel(y, w, m)).mean() for w, m in MEL_SCALES)
    as_tensor = [torch.from_numpy(a).float().view(1, 1, -1) for a in (x, y)]
    assert multiscale_mel_loss(*as_tensor).item() == pytest.approx(expected, rel=1e-4)
    assert multiscale_mel_loss(as_tensor[0], as_tensor[0]).item() == 0.0


def _numpy_stft_magnitude(x: np.ndarray, window: int) -> np.ndarray:
    """Centred (reflect-padded) Hann frames, hop a quarter window, as torch.stft frames them."""
    padded = np.pad(x, window // 2, mode="reflect")
    hop = window // 4
    frames = np.stack([padded[i:i + window] for i in range(0, len(padded) - window + 1, hop)])
    return np.abs(np.fft.rfft(frames * np.hanning(window + 1)[:-1], axis=1))


def test_the_stft_loss_equals_a_framing_by_hand_and_does_not_reward_silence():
    x = render(split("train")[0], 0).astype(np.float64)
    y = render(split("train")[5], 1).astype(np.float64)
    expected = np.mean([np.abs(_numpy_stft_magnitude(x, w) - _numpy_stft_magnitude(y, w)).mean()
                        / _numpy_stft_magnitude(y, w).mean() for w in (64, 128, 256, 512, 1024)])
    as_tensor = [torch.from_numpy(a).float().view(1, 1, -1) for a in (x, y)]
    assert multiresolution_stft_loss(*as_tensor).item() == pytest.approx(expected, rel=1e-4)
    assert multiresolution_stft_loss(as_tensor[1], as_tensor[1]).item() == 0.0
    # silence costs exactly the target's energy (1 at every resolution), a louder wrong clip can cost more
    assert multiresolution_stft_loss(torch.zeros_like(as_tensor[1]), as_tensor[1]).item() == pytest.approx(1.0)


def test_pre_emphasis_is_a_first_difference_that_lifts_high_partials():
    from genrl.toy.pretrain_audio import pre_emphasis

    x = torch.randn(2, 1, 50, dtype=torch.float64)
    by_hand = x.clone()
    by_hand[..., 1:] = x[..., 1:] - 0.95 * x[..., :-1]
    assert torch.equal(pre_emphasis(x), by_hand)
    t = torch.arange(4000, dtype=torch.float64) / SAMPLE_RATE
    gain = {f: pre_emphasis(torch.sin(2 * np.pi * f * t))[100:].std() / torch.sin(2 * np.pi * f * t).std()
            for f in (160.0, 3200.0)}
    assert gain[3200.0] > 10 * gain[160.0]


def _weights(path):
    pipe = StableAudioPipeline.from_pretrained(path, local_files_only=True)
    return {f"{name}.{k}": v for name in ("vae", "transformer", "text_encoder", "projection_model")
            for k, v in getattr(pipe, name).state_dict().items()}


@pytest.mark.parametrize("die_in", ["vae", "denoiser"])
def test_an_interrupted_audio_pretraining_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, die_in):
    check_resumes_to_the_uninterrupted_run(
        tmp_path, monkeypatch, run_class=pretrain_audio_module._AudioRun, pretrain=pretrain_audio, weights=_weights,
        config=lambda **kw: AudioPretrainConfig(**{**TINY, **kw}), die_in=die_in, changed=("vae_lr", 5e-4))


def test_a_decoder_only_vae_stage_keeps_the_encoder_and_the_dit(tmp_path):
    base = tmp_path / "base"
    build_toy_audio_pipeline(seed=3).save_pretrained(base)
    settings = {**TINY, "steps": 0}
    pretrain_audio(AudioPretrainConfig(out_dir=str(tmp_path / "decoder"), init_from=str(base), continue_vae=True,
                                       vae_decoder_only=True, **settings))
    pretrain_audio(AudioPretrainConfig(out_dir=str(tmp_path / "whole"), init_from=str(base), continue_vae=True,
                                       **settings))
    pipes = {name: StableAudioPipeline.from_pretrained(tmp_path / name, local_files_only=True)
             for name in ("base", "decoder", "whole")}

    def changed(name: str, part: str) -> set[str]:
        before, after = getattr(pipes["base"], part).state_dict(), getattr(pipes[name], part).state_dict()
        return {k for k in before if not torch.equal(before[k], after[k])}

    assert not changed("decoder", "transformer") and not changed("whole", "transformer")  # steps=0
    assert {k.split(".")[0] for k in changed("decoder", "vae")} == {"decoder"}  # no refolded normalisation either
    assert any(k.startswith("encoder.") for k in changed("whole", "vae"))


def test_bad_settings_are_named():
    with pytest.raises(PretrainError, match="prompt_dropout"):
        AudioPretrainConfig(prompt_dropout=1.0)
    with pytest.raises(PretrainError, match="emphasis_weight=-1 must be >= 0"):
        AudioPretrainConfig(emphasis_weight=-1)
    with pytest.raises(PretrainError, match="spectral_loss='log' is not one of"):
        AudioPretrainConfig(spectral_loss="log")
    with pytest.raises(PretrainError, match="continue_vae=true needs init_from"):
        AudioPretrainConfig(continue_vae=True)
    with pytest.raises(PretrainError, match="vae_decoder_only=true needs continue_vae=true"):
        AudioPretrainConfig(init_from="x", vae_decoder_only=True)
    with pytest.raises(PretrainError, match="vae_crop=1100 must be a multiple of the VAE's hop 200"):
        pretrain_audio(AudioPretrainConfig(out_dir="/nonexistent/x", **{**TINY, "vae_crop": 1100}))


@pytest.mark.skipif(not (TOY_AUDIO_PIPELINE_DIR / "model_index.json").is_file(), reason="toy audio weights not built")
def test_the_shipped_audio_pipeline_loads_plainly_and_plays_notes():
    from genrl.toy.evaluate_audio import evaluate_audio_pipeline

    pipe = StableAudioPipeline.from_pretrained(TOY_AUDIO_PIPELINE_DIR)  # the stock loader, no arguments
    pipe.set_progress_bar_config(disable=True)
    singles = [s for s in split("test") if s.family in ("single_note", "register")]
    report = evaluate_audio_pipeline(pipe, singles, clips_per_prompt=2)
    # named registers ("a high sine note" and the like) are strictly right in 0.67-0.83 of held-out clips
    # (docs/toy-audio-world.md); a random init's noise in none
    assert report.strict["register"] >= 0.5
