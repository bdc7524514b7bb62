"""The tiny text-to-audio pipeline of the Stable Audio Open architecture that the toy audio world ships.

Its parts are the classes Stable Audio Open 1.0 uses (``StableAudioDiTModel``, ``AutoencoderOobleck``, a
``T5EncoderModel`` with ``StableAudioProjectionModel`` and its seconds conditioners, and Stable Audio's
``CosineDPMSolverMultistepScheduler`` with the hub checkpoint's values) at a tiny size, so a plain
``StableAudioPipeline.from_pretrained(path)`` loads it (the scheduler needs ``torchsde``: the ``audio`` extra).

Sizes: one-second mono clips at 8 kHz (the toy audio world's); the Oobleck VAE downsamples 200x (2, 10, 10) into
40 latent frames of 16 channels, so the latent frame rate is the world's 40 Hz pitch grid and a held note is a
steady latent; the DiT (6 blocks, width 192) attends over those 40 frames plus the global token. The tokenizer is the toy CLIP tokenizer over the audio vocabulary (the loader reads the tokenizer class
from the folder, as the toy edit pipeline's T5 slot does). Stable Audio's pipeline does not scale latents, so
pretraining folds the per-channel standard deviation of the encoded clips into the VAE's last encoder
and first decoder convolutions (:func:`normalise_vae_latents`): the latents the DiT sees have unit standard deviation
per channel.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from rewards.toyaudio.world import DURATION_S, NUM_SAMPLES, SAMPLE_RATE

from .pipeline import ASSETS_DIR

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioPipeline

TOY_AUDIO_PIPELINE_DIR = ASSETS_DIR / "stable-audio-toy"
TOY_AUDIO_GUIDANCE_SCALE = 3.0
TOY_AUDIO_NUM_INFERENCE_STEPS = 24
VAE_DOWNSAMPLING = (2, 10, 10)  # even ratios: Oobleck's transposed convolutions lose samples on odd ones
VAE_HOP = math.prod(VAE_DOWNSAMPLING)
VAE_HIDDEN = 32  # the encoder's output width: mean and scale of 16 latent channels
LATENT_CHANNELS = VAE_HIDDEN // 2
LATENT_LENGTH = NUM_SAMPLES // VAE_HOP
T5_HIDDEN = 64
CONDITIONING_DIM = 64




def vae_config() -> dict:
    """A mono 8 kHz Oobleck autoencoder with a 200x hop (3 encoder blocks of widths 32, 128, 256)."""
    return dict(encoder_hidden_size=VAE_HIDDEN, downsampling_ratios=list(VAE_DOWNSAMPLING), channel_multiples=[1, 4, 8],
                decoder_channels=VAE_HIDDEN, decoder_input_channels=LATENT_CHANNELS, audio_channels=1,
                sampling_rate=SAMPLE_RATE)


def transformer_config() -> dict:
    """A Stable Audio DiT of 6 blocks, width 192 (6 heads of 32, 3 key/value heads), over the VAE's 40 latent
    frames."""
    return dict(sample_size=LATENT_LENGTH, in_channels=LATENT_CHANNELS, num_layers=6, attention_head_dim=32,
                num_attention_heads=6, num_key_value_attention_heads=3, out_channels=LATENT_CHANNELS,
                cross_attention_dim=192, time_proj_dim=64, global_states_input_dim=2 * CONDITIONING_DIM,
                cross_attention_input_dim=CONDITIONING_DIM)


def toy_audio_scheduler() -> CosineDPMSolverMultistepScheduler:
    """Stable Audio Open 1.0's scheduler with its hub ``scheduler_config.json`` values."""
    from diffusers import CosineDPMSolverMultistepScheduler

    return CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500, sigma_data=1.0, sigma_schedule="exponential",
                                             solver_order=2, prediction_type="v_prediction", final_sigmas_type="zero")


def build_toy_audio_pipeline(seed: int = 0) -> StableAudioPipeline:
    """A randomly initialised toy audio pipeline (deterministic for a seed)."""
    import torch
    from diffusers import (
        AutoencoderOobleck,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    from rewards.toyaudio.world import vocabulary

    from .tokenizer import MODEL_MAX_LENGTH, build_toy_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_toy_tokenizer(vocabulary())
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=T5_HIDDEN, d_kv=16, d_ff=4 * T5_HIDDEN, num_layers=2, num_heads=4,
        relative_attention_num_buckets=16, relative_attention_max_distance=MODEL_MAX_LENGTH, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=tokenizer.pad_token_id))
    # seconds conditioners over [0, 1]: every toy clip is the whole second
    projection = StableAudioProjectionModel(text_encoder_dim=T5_HIDDEN, conditioning_dim=CONDITIONING_DIM,
                                            min_value=0, max_value=DURATION_S)
    return StableAudioPipeline(vae=AutoencoderOobleck(**vae_config()), text_encoder=text_encoder,
                               projection_model=projection, tokenizer=tokenizer,
                               transformer=StableAudioDiTModel(**transformer_config()), scheduler=toy_audio_scheduler())


def load_toy_audio_pipeline(path: str | Path | None = None, **kwargs) -> StableAudioPipeline:
    """Load the shipped toy audio pipeline (or one saved elsewhere) with ``StableAudioPipeline.from_pretrained``."""
    from diffusers import StableAudioPipeline

    path = Path(path) if path is not None else TOY_AUDIO_PIPELINE_DIR
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"no pipeline at {path} (model_index.json missing); the toy audio weights are produced "
                                "by `python scripts/pretrain_toy_audio.py`")
    return StableAudioPipeline.from_pretrained(path, local_files_only=True, **kwargs)


def _effective_weight(conv: torch.nn.Conv1d) -> torch.Tensor:
    """The weight a weight-normalised (or plain) convolution applies."""
    if hasattr(conv, "weight_v"):
        v, g = conv.weight_v, conv.weight_g
        return g * v / v.norm(dim=(1, 2), keepdim=True)
    return conv.weight


def _set_weight(conv: torch.nn.Conv1d, weight: torch.Tensor) -> None:
    if hasattr(conv, "weight_v"):
        conv.weight_v.copy_(weight)
        conv.weight_g.copy_(weight.norm(dim=(1, 2), keepdim=True))
    else:
        conv.weight.copy_(weight)


def normalise_vae_latents(vae: AutoencoderOobleck, std: torch.Tensor) -> None:
    """Fold ``z' = z / std`` (per latent channel) into the encoder's output convolution and its inverse into the
    decoder's input convolution, so ``decode(encode(x))`` is unchanged and the posterior mean is ``z'``.

    Only the scale is folded: the decoder's input convolution zero-pads the latents, and a shifted latent would
    pad with another value at the clip's edges. (The autoencoder's latent penalty keeps the channel means near 0.)
    The posterior's scale channels are left as they are (the toy only uses the mean)."""
    import torch

    with torch.no_grad():
        out_conv, in_conv = vae.encoder.conv2, vae.decoder.conv1
        c = std.numel()
        w = _effective_weight(out_conv).clone()
        w[:c] /= std.view(-1, 1, 1)
        _set_weight(out_conv, w)
        out_conv.bias[:c] /= std
        _set_weight(in_conv, _effective_weight(in_conv) * std.view(1, -1, 1))
