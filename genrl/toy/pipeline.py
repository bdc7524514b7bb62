"""The tiny text-to-image pipeline of the SD3 architecture that the toy world ships.

Its parts are the real diffusers/transformers classes SD3.5 uses (``SD3Transformer2DModel``,
``AutoencoderKL``, two ``CLIPTextModelWithProjection`` encoders, ``CLIPTokenizer``,
``FlowMatchEulerDiscreteScheduler``) at a tiny size; there is no T5 encoder, which SD3 allows.
Because the pipeline substitutes zeros for T5 embeddings, the toy model is trained and sampled
with ``max_sequence_length=TOY_MAX_SEQUENCE_LENGTH`` (no zero T5 tokens); pass it to the pipeline
call. The pretrained weights live in ``genrl/toy/assets/sd3-toy`` and load with
``StableDiffusion3Pipeline.from_pretrained(path, text_encoder_3=None, tokenizer_3=None)``, exactly as
SD3.5 loads without its T5 encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rewards.toyworld.world import IMAGE_SIZE

if TYPE_CHECKING:  # torch, diffusers and transformers load in seconds: imported where a model is built
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextConfig

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TOY_PIPELINE_DIR = ASSETS_DIR / "sd3-toy"
#: Number of (zero) T5 tokens the toy transformer sees; the toy pipeline has no T5 encoder.
TOY_MAX_SEQUENCE_LENGTH = 0
#: Sampling defaults the toy pipeline was evaluated with.
TOY_GUIDANCE_SCALE = 4.5
TOY_NUM_INFERENCE_STEPS = 20

LATENT_CHANNELS = 4
#: The VAE halves the resolution twice: 32 px images become 8x8x4 latents (256 numbers, SD's 4
#: channels). Every SDE step of an RL rollout injects noise into each latent number, and the policy
#: gradient's noise grows with their count: the first edition's 16x16x8 latents had 8x as many.
VAE_DOWNSAMPLE = 4
#: One transformer token per latent pixel (a 4x4 image patch), as in the first edition.
PATCH_SIZE = 1
TEXT_HIDDEN = 64
TEXT_PROJECTION = 32


def vae_config() -> dict:
    """A VAE with two 2x downsamplings and no mid-block attention (attention made it ~20x slower to train).

    The decoder, not the transformer, draws the sharp shape edges; the transformer works on 8x8x4 latents.
    """
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(32, 64, 64), layers_per_block=1,
                latent_channels=LATENT_CHANNELS, norm_num_groups=8, sample_size=IMAGE_SIZE,
                mid_block_add_attention=False, scaling_factor=1.0, shift_factor=0.0)


def transformer_config() -> dict:
    """An SD3 MMDiT with 8x8 tokens of one latent pixel (4x4 image pixels), hidden size 128, 4 joint blocks."""
    latent_size = IMAGE_SIZE // VAE_DOWNSAMPLE
    return dict(sample_size=latent_size, patch_size=PATCH_SIZE, in_channels=LATENT_CHANNELS, num_layers=4,
                attention_head_dim=32, num_attention_heads=4, joint_attention_dim=2 * TEXT_HIDDEN,
                caption_projection_dim=128, pooled_projection_dim=2 * TEXT_PROJECTION,
                out_channels=LATENT_CHANNELS, pos_embed_max_size=latent_size // PATCH_SIZE)


def text_encoder_config(vocab_size: int, eos_token_id: int) -> CLIPTextConfig:
    """A two-layer CLIP text tower; pooling reads the first EOS token, as CLIP does."""
    from transformers import CLIPTextConfig

    from .tokenizer import MODEL_MAX_LENGTH

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN,
                          projection_dim=TEXT_PROJECTION, num_hidden_layers=2, num_attention_heads=2,
                          max_position_embeddings=MODEL_MAX_LENGTH, eos_token_id=eos_token_id,
                          bos_token_id=0, pad_token_id=eos_token_id)


def build_toy_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """A randomly initialised toy pipeline (deterministic for a seed)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    from .tokenizer import build_toy_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_toy_tokenizer()
    text_cfg = text_encoder_config(len(tokenizer), tokenizer.eos_token_id)
    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**transformer_config()),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0),
        vae=AutoencoderKL(**vae_config()),
        text_encoder=CLIPTextModelWithProjection(text_cfg),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(text_cfg),
        tokenizer_2=build_toy_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )


def load_toy_pipeline(path: str | Path | None = None, **kwargs) -> StableDiffusion3Pipeline:
    """Load the shipped toy pipeline (or one saved elsewhere) with ``from_pretrained``."""
    from diffusers import StableDiffusion3Pipeline

    path = Path(path) if path is not None else TOY_PIPELINE_DIR
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no pipeline at {path} (model_index.json missing); the toy weights are produced by "
            "`python scripts/pretrain_toy.py`")
    # The toy pipeline has no T5 encoder; diffusers wants that said explicitly, as for SD3.5 without T5.
    kwargs = {"text_encoder_3": None, "tokenizer_3": None, **kwargs}
    return StableDiffusion3Pipeline.from_pretrained(path, local_files_only=True, **kwargs)
