"""Frame-level audio embeddings and reference sets for the distributional audio rewards (FAD, per-song FAD).

A clip becomes a set of frame embeddings, as fadtk builds them:

- ``encoder="clap"``: CLAP audio embeddings of windows of ``window_s`` seconds starting every ``hop_s`` seconds
  from the clip's start (the last ones zero-padded to the window length), after an int16 round trip, as
  fadtk's ``clap-laion-*`` models do (there: 10 s windows, 1 s hop; the defaults here suit 1-second toy
  clips). The CLAP text tower embeds captions, so a reference set can be text only (DRAGON's cross-modal
  exemplars);
- ``encoder="vae"``: the generator's own VAE encoder (``AutoencoderOobleck`` of a Stable Audio pipeline): the
  posterior mean's time steps are the frames, as fadtk's codec encoders (EnCodec, DAC) give them.

Reference sets (:func:`reference_clips`): ``"toy"`` renders the toy audio world's clips of a split's prompts;
any other value is a folder of ``.wav`` files. Clips are resampled to the encoder's input rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .clap import ClapReward, resample


def fadtk_windows(waveform: torch.Tensor, sample_rate: int, window_s: float, hop_s: float) -> torch.Tensor:
    """``(n, window)`` windows of a mono ``(T,)`` waveform: one starting every ``hop_s`` seconds from 0 while the
    start is inside the clip, each ``window_s`` long, zero-padded at the end (fadtk's CLAP chunking)."""
    window, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    if window < 1 or hop < 1:
        raise ValueError(f"window_s={window_s} and hop_s={hop_s} must each be at least one sample at {sample_rate} Hz")
    if waveform.ndim != 1 or waveform.numel() == 0:
        raise ValueError(f"expected one non-empty mono waveform (T,), got shape {tuple(waveform.shape)}")
    chunks = [waveform[start:start + window] for start in range(0, waveform.numel(), hop)]
    return torch.stack([torch.nn.functional.pad(c, (0, window - c.numel())) for c in chunks])


def int16_round_trip(waveforms: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and quantise to 16-bit PCM and back (fadtk applies it before CLAP)."""
    return (waveforms.clamp(-1, 1) * 32767.0).to(torch.int16).float() / 32767.0


class ClapFrames:
    """CLAP audio embeddings of fadtk windows of each clip (``(n_windows, d)`` per clip), and text embeddings.

    ``options`` go to :class:`rewards.clap.ClapReward` (``model``, ``backend``, ``device``; ``sample_rate`` is
    the rate the clips arrive at).
    """

    def __init__(self, sample_rate: int, window_s: float = 0.25, hop_s: float = 0.125, **options) -> None:
        self.sample_rate, self.window_s, self.hop_s = int(sample_rate), window_s, hop_s
        self.clap = ClapReward(sample_rate=self.sample_rate, **options)

    def frames(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """One ``(n_windows, d)`` float64 tensor per ``(N, T)`` mono waveform."""
        out = []
        for clip in int16_round_trip(waveforms.detach().float().cpu()):
            out.append(self.clap.embed_audio(fadtk_windows(clip, self.sample_rate, self.window_s, self.hop_s)).double().cpu())
        return out

    def text(self, captions: list[str]) -> torch.Tensor:
        """``(N, d)`` float64 text embeddings of captions."""
        return self.clap.embed_text(captions).double().cpu()


class VaeFrames:
    """The posterior means of a diffusers audio VAE (``AutoencoderOobleck``; ``pipeline``: a pipeline folder with a
    ``vae`` subfolder, or the VAE's own folder), one frame per latent time step (``(T', latent channels)``)."""

    def __init__(self, sample_rate: int, pipeline: str, device: str | torch.device = "cpu") -> None:
        from diffusers import AutoencoderOobleck

        root = Path(pipeline).expanduser()
        folder = root / "vae" if (root / "vae" / "config.json").is_file() else root
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no VAE in {pipeline!r} (expected {root}/vae/config.json or {root}/config.json)")
        self.device = torch.device(device)
        self.vae = AutoencoderOobleck.from_pretrained(folder).to(self.device).eval().requires_grad_(False)
        self.sample_rate, self.vae_rate = int(sample_rate), int(self.vae.config.sampling_rate)
        self.channels = int(self.vae.config.audio_channels)

    @torch.no_grad()
    def frames(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """One ``(T', C)`` float64 tensor per ``(N, T)`` mono waveform (the mono signal on every VAE channel)."""
        audio = resample(waveforms, self.sample_rate, self.vae_rate)
        audio = audio[:, None].expand(-1, self.channels, -1).to(self.device, self.vae.dtype)
        mean = self.vae.encode(audio).latent_dist.mean  # (N, C, T')
        return [m.transpose(0, 1).double().cpu() for m in mean]


def build_audio_frames(encoder: str, sample_rate: int, **options) -> ClapFrames | VaeFrames:
    """The frame encoder named ``encoder`` (``"clap"`` or ``"vae"``) for clips at ``sample_rate``."""
    if encoder == "clap":
        return ClapFrames(sample_rate, **options)
    if encoder == "vae":
        if "pipeline" not in options:
            raise ValueError("encoder 'vae' needs the option pipeline (a Stable Audio pipeline folder)")
        return VaeFrames(sample_rate, **options)
    raise ValueError(f"unknown audio encoder {encoder!r}; expected 'clap' or 'vae'")


def read_wav(path: str | Path, sample_rate: int, what: str = "clip") -> torch.Tensor:
    """A ``.wav`` file as a mono ``(T,)`` float waveform in [-1, 1] at ``sample_rate`` (channels averaged, integer
    PCM scaled by its type's maximum); a silent or non-finite clip is an error naming the file."""
    from scipy.io import wavfile

    rate, data = wavfile.read(path)
    data = np.asarray(data)
    scale = float(np.iinfo(data.dtype).max) if np.issubdtype(data.dtype, np.integer) else 1.0
    mono = torch.from_numpy(data.astype(np.float64) / scale)
    mono = mono.mean(1) if mono.ndim == 2 else mono
    if not torch.isfinite(mono).all() or not mono.abs().max() > 0:
        raise ValueError(f"{what} {path} is silent or not finite")
    return resample(mono[None].float(), int(rate), sample_rate)[0]


def reference_clips(references: str, sample_rate: int, reference_prompts: str = "train", per_prompt: int = 4,
                    seed: int = 0) -> torch.Tensor:
    """``(N, T)`` mono reference clips at ``sample_rate``: the toy audio world's renders of ``per_prompt`` clips of
    every prompt of the split ``reference_prompts`` (``references="toy"``), or every ``.wav`` file of a folder
    (its clips padded or cropped to the first one's length)."""
    if references == "toy":
        from rewards.toyaudio.prompts import split
        from rewards.toyaudio.render import render_batch
        from rewards.toyaudio.world import SAMPLE_RATE

        specs = [s for s in split(reference_prompts) for _ in range(per_prompt)]
        clips = torch.from_numpy(render_batch(specs, seed=seed))
        return resample(clips, SAMPLE_RATE, sample_rate)
    folder = Path(references).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"reference audio folder not found: {folder} (or use references: toy)")
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise ValueError(f"reference audio folder {folder} has no .wav files")
    clips = [read_wav(path, sample_rate, what="reference clip") for path in files]
    length = clips[0].numel()
    return torch.stack([torch.nn.functional.pad(c, (0, max(0, length - c.numel())))[:length] for c in clips])
