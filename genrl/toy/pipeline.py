"""The tiny text-to-image pipeline of the SD3 architecture that the toy world ships.

Its parts are the real diffusers/transformers classes SD3.5 uses (``SD3Transformer2DModel``,
``AutoencoderKL``, two ``CLIPTextModelWithProjection`` encoders, ``CLIPTokenizer``,
``FlowMatchEulerDiscreteScheduler``) at a tiny size. Its T5 slot holds a *null* T5: a one-layer
``T5EncoderModel`` whose final norm is zero, so it emits exactly the zero embeddings SD3 uses for a
dropped T5 (what ``text_encoder_3=None`` gives), and the transformer is trained to give the same
velocity whatever the number of those zero tokens (``genrl.toy.pretrain``'s null-T5 stage). So the
pipeline loads with a plain ``StableDiffusion3Pipeline.from_pretrained(path)`` and samples with the
pipeline's defaults; genrl samples it with ``max_sequence_length=TOY_MAX_SEQUENCE_LENGTH`` (no T5
tokens at all, :func:`genrl.models.sd3.t5_tokens_dropped`), three times cheaper per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rewards.toyworld.world import IMAGE_SIZE

if TYPE_CHECKING:  # torch, diffusers and transformers load in seconds: imported where a model is built
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, T5EncoderModel

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TOY_PIPELINE_DIR = ASSETS_DIR / "sd3-toy"
#: Number of T5 tokens genrl samples the toy pipeline with: none (its T5 emits zeros, which the transformer ignores).
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


def null_t5_encoder(vocab_size: int) -> T5EncoderModel:
    """A one-layer T5 encoder of the transformer's context width whose output is exactly zero.

    Its final RMS norm has weight 0, so every token embeds to the zeros SD3's pipeline substitutes for
    a dropped T5: the toy pipeline behaves the same with this encoder or with ``text_encoder_3=None``,
    and the stock loader, which requires a T5 slot, accepts the folder.
    """
    import torch
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=transformer_config()["joint_attention_dim"], d_kv=16, d_ff=32,
                      num_layers=1, num_heads=1, decoder_start_token_id=0, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):  # the same encoder every time, and the caller's random stream untouched
        torch.manual_seed(0)
        encoder = T5EncoderModel(config)
    with torch.no_grad():
        encoder.encoder.final_layer_norm.weight.zero_()
    return encoder.eval().requires_grad_(False)


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
        text_encoder_3=null_t5_encoder(len(tokenizer)),
        tokenizer_3=build_toy_tokenizer(),
    )


def load_toy_pipeline(path: str | Path | None = None, **kwargs) -> StableDiffusion3Pipeline:
    """Load the shipped toy pipeline (or one saved elsewhere) with ``from_pretrained``."""
    from diffusers import StableDiffusion3Pipeline

    path = Path(path) if path is not None else TOY_PIPELINE_DIR
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no pipeline at {path} (model_index.json missing); the toy weights are produced by "
            "`python scripts/pretrain_toy.py`")
    from genrl.models.loading import absent_components

    # a toy pipeline saved without the null T5 (before it existed) records it as null: pass None for it
    kwargs = {**absent_components(path), **kwargs}
    return StableDiffusion3Pipeline.from_pretrained(path, local_files_only=True, **kwargs)
