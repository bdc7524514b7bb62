"""DRAGON's distributional rewards from a config: fadtk's windows, per-song FAD with the generator's VAE and with
CLAP against audio or text-only references, the set rewards' leave-one-out scores, and DRAGON's set selection
on the trainer."""

import numpy as np
import pytest
import torch
from helpers.tiny_models import save_tiny_clap
from helpers.tiny_pipelines import tiny_stable_audio_pipeline
from scipy import linalg
from scipy.io import wavfile

from rewards import build_reward
from rewards.audio_frames import fadtk_windows, reference_clips
from rewards.references import ReferenceImages
from rewards.toyworld.prompts import split


def _fd_eig(mu1, cov1, mu2, cov2) -> float:
    """The Fréchet distance with the matrix square root by eigendecomposition (fadtk's second method)."""
    vals, vecs = linalg.eig(cov1 @ cov2)
    covmean = (vecs * np.sqrt(vals.astype(complex))) @ linalg.inv(vecs)
    diff = mu1 - mu2
    return float(np.real(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean)))


def test_fadtk_windows_start_every_hop_and_pad_the_tail():
    x = torch.arange(1, 11, dtype=torch.float32)  # 10 samples at 4 Hz: windows of 1 s (4), hop 0.5 s (2)
    w = fadtk_windows(x, 4, window_s=1.0, hop_s=0.5)
    assert w.shape == (5, 4)  # starts 0, 2, 4, 6, 8
    for k, start in enumerate(range(0, 10, 2)):
        chunk = x[start:start + 4].numpy()
        np.testing.assert_array_equal(w[k].numpy(), np.pad(chunk, (0, 4 - len(chunk))))
    with pytest.raises(ValueError, match="at least one sample"):
        fadtk_windows(x, 4, window_s=0.1, hop_s=0.5)


@pytest.fixture(scope="module")
def tiny_audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    tiny_stable_audio_pipeline().save_pretrained(root / "pipe")
    save_tiny_clap(root / "clap")
    return root


def _clips(n: int, length: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 4.0
    return torch.stack([0.5 * torch.sin(2 * np.pi * (0.3 + 0.2 * k) * t) + 0.05 * torch.randn(length, generator=g)
                        for k in range(n)])


def test_per_song_fd_with_the_generators_vae_against_a_wav_folder(tiny_audio, tmp_path):
    from diffusers import AutoencoderOobleck

    refs = _clips(6, seed=1)
    for i, clip in enumerate(refs):
        wavfile.write(tmp_path / f"ref_{i}.wav", 4, (clip.numpy() * 32767).astype(np.int16))
    loaded = reference_clips(str(tmp_path), 4)
    np.testing.assert_allclose(loaded.numpy(), np.round(refs.numpy() * 32767) / 32767, atol=1e-4)

    reward = build_reward("per_song_fd", encoder="vae", pipeline=str(tiny_audio / "pipe"), references=str(tmp_path),
                          sample_rate=4, ridge=1e-3)
    clips = _clips(3, seed=2)
    scores = reward(clips, [""] * 3).scores
    # independently: the VAE's posterior means, one frame per latent step, the mono clip on both channels
    vae = AutoencoderOobleck.from_pretrained(tiny_audio / "pipe" / "vae")

    def enc(x):
        with torch.no_grad():
            return vae.encode(x[:, None].expand(-1, 2, -1)).latent_dist.mean.transpose(1, 2).double().numpy()

    ref_frames = enc(loaded).reshape(-1, 3)
    mu2, cov2 = ref_frames.mean(0), np.cov(ref_frames, rowvar=False) + 1e-3 * np.eye(3)
    for score, frames in zip(scores, enc(clips), strict=True):
        expected = _fd_eig(frames.mean(0), np.cov(frames, rowvar=False) + 1e-3 * np.eye(3), mu2, cov2)
        assert score.item() == pytest.approx(-expected, rel=1e-4, abs=1e-5)
    assert (scores <= 0).all()


def test_per_song_fd_against_text_captions_only(tiny_audio, tmp_path):
    from transformers import ClapModel, ClapProcessor

    captions = tmp_path / "captions.txt"
    captions.write_text("a sine tone\nwhite noise\na piano melody\nrain on a window\na dog barking\n" * 4)
    reward = build_reward("per_song_fd", encoder="clap", model=str(tiny_audio / "clap"), sample_rate=4,
                          window_s=2.0, hop_s=1.0, references=None, reference_captions=str(captions), ridge=1e-2)
    model, proc = ClapModel.from_pretrained(tiny_audio / "clap"), ClapProcessor.from_pretrained(tiny_audio / "clap")
    lines = captions.read_text().split("\n")[:-1]
    with torch.no_grad():
        out = model.get_text_features(**proc(text=lines, padding=True, return_tensors="pt"))
    text = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1).double().numpy()
    np.testing.assert_allclose(reward.reference.mu, text.mean(0), atol=1e-6)
    np.testing.assert_allclose(reward.reference.sigma, np.cov(text, rowvar=False) + 1e-2 * np.eye(16), atol=1e-6)
    scores = reward(_clips(2), ["", ""]).scores
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores <= 0).all()
    with pytest.raises(ValueError, match="needs encoder 'clap'"):
        build_reward("per_song_fd", encoder="vae", pipeline=str(tiny_audio / "pipe"), reference_captions=str(captions))


def test_a_short_clip_without_a_ridge_names_the_counts(tiny_audio):
    reward = build_reward("per_song_fd", encoder="vae", pipeline=str(tiny_audio / "pipe"), references="toy",
                          per_prompt=1, sample_rate=4, reference_prompts="test")
    assert reward.reference.dim == 3  # the toy audio world's test clips, at the tiny VAE's 4 Hz
    with pytest.raises(ValueError, match=r"clip 0: 3 embeddings of dimension 3 give a singular covariance"):
        reward(_clips(1, length=6), [""])  # 3 latent frames


def _toy_scenes(n: int) -> torch.Tensor:
    return torch.cat([ReferenceImages("toy", per_prompt=1, heldout=0, seed=3).all_for(s.prompt)
                      for s in split("test")[:n]]).float() / 255.0


def test_set_rewards_score_leave_one_out_contributions():
    from rewards.distributional import vendi_score

    images = _toy_scenes(6)
    vendi = build_reward("vendi", encoder="toy")
    assert vendi.arity == "set" and build_reward("exemplar_fd", per_prompt=1).arity == "sample"
    out = vendi(images, [""] * 6)
    emb = torch.cat(vendi.frames(images)).numpy()
    whole = vendi_score(emb)
    assert out.info["set_value"] == pytest.approx(whole)
    expected = [whole - vendi_score(np.delete(emb, i, axis=0)) for i in range(6)]
    np.testing.assert_allclose(out.scores.numpy(), expected, rtol=1e-5)

    fd = build_reward("dataset_fd", encoder="toy", per_prompt=2, ridge=1e-2)
    value = fd.set_value(fd.frames(images))
    cov = np.cov(emb, rowvar=False) + 1e-2 * np.eye(emb.shape[1])
    assert value == pytest.approx(-_fd_eig(emb.mean(0), cov, fd.reference.mu, fd.reference.sigma), rel=1e-6)


@pytest.mark.parametrize("selection", ["leave_one_out", "greedy"])
def test_dragon_builds_demonstrations_over_the_epochs_set(tmp_path, selection):
    from test_trainer import CONFIGS, tiny_overrides

    from genrl.config import load_config
    from genrl.trainer import Trainer

    extra = {"reward.weights": "{vendi: 1.0}", "reward.options": "{vendi: {encoder: toy}}", "reward.eval": "{}",
             "dragon.set_selection": selection, "dragon.demonstrations": "unpaired", "sample.batch_size": 8,
             "sample.group_size": 4, "sample.same_latent": False}
    trainer = Trainer(load_config(CONFIGS / "toy_dragon.yaml", tiny_overrides(tmp_path, **extra)))
    batches = trainer.sample_epoch(0)
    trainer.score_epoch(batches)
    units, stats = trainer.algorithm.preference_batches(trainer, batches, 0)
    reward = trainer.reward_fn.components["vendi"]
    frames = [f for b in batches for f in reward.media_frames(b.media)]
    assert stats["dragon/set_value"] == pytest.approx(reward.set_value(frames))
    labels = torch.cat([u.extras["labels"] for u in units]).cpu()
    assert set(labels.tolist()) <= {-1, 1} and (labels == 1).any() and (labels == -1).any()
    assert stats["dragon/set_value_plus"] >= stats["dragon/set_value_minus"]
    if selection == "greedy":  # half the set in D+, the rest in D-
        assert (labels == 1).sum().item() == len(frames) // 2 and len(labels) == len(frames)
