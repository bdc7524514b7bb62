"""The tiny image-editing pipeline of the FLUX.1 Kontext architecture that the toy edit world ships.

Its parts are the classes FLUX.1 Kontext-dev uses (``FluxTransformer2DModel`` with a guidance embedding,
``AutoencoderKL``, a ``CLIPTextModel`` for the pooled text vector and a ``T5EncoderModel`` for the text
sequence, ``FlowMatchEulerDiscreteScheduler`` with resolution-dependent shift) at a tiny size, so a plain
``FluxKontextPipeline.from_pretrained(path)`` loads it. The VAE is the toy SD3 pipeline's (the same
32 px scenes, 8 x 8 x 4 latents, packed 2 x 2 into 16 tokens of 16 channels); both tokenizers are the toy
CLIP tokenizer over the edit vocabulary. The toy is not guidance-distilled: pretraining feeds random
guidance values, so the embedding exists (as Kontext-dev's does) and the output does not depend on it.

Sampling at the toy's size with the stock pipeline needs ``height=32, width=32, max_area=32 * 32,
_auto_resize=False`` (Kontext otherwise resizes to about a megapixel) and
``max_sequence_length=TOY_EDIT_MAX_SEQUENCE_LENGTH`` (the T5 was trained on that many tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rewards.toyworld.world import IMAGE_SIZE

from .pipeline import ASSETS_DIR, TOY_PIPELINE_DIR, text_encoder_config

if TYPE_CHECKING:
    from diffusers import FluxKontextPipeline

TOY_EDIT_PIPELINE_DIR = ASSETS_DIR / "kontext-toy"
#: T5 tokens per instruction (the longest instruction has 5 words).
TOY_EDIT_MAX_SEQUENCE_LENGTH = 16
TOY_EDIT_GUIDANCE_SCALE = 2.5  # Kontext-dev's; the toy ignores it
TOY_EDIT_NUM_INFERENCE_STEPS = 16
T5_HIDDEN = 64


def edit_transformer_config() -> dict:
    """A FLUX transformer over packed 2 x 2 latent patches: 2 double-stream and 3 single-stream blocks, width 128."""
    return dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=32,
                num_attention_heads=4, joint_attention_dim=T5_HIDDEN, pooled_projection_dim=64, guidance_embeds=True,
                axes_dims_rope=[8, 12, 12])


def edit_t5_encoder(vocab_size: int, pad_token_id: int):
    """A two-layer T5 encoder of width :data:`T5_HIDDEN` (the transformer's context width)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=T5_HIDDEN, d_kv=16, d_ff=4 * T5_HIDDEN, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=16, relative_attention_max_distance=TOY_EDIT_MAX_SEQUENCE_LENGTH,
                      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=pad_token_id)
    return T5EncoderModel(config)


def build_toy_edit_pipeline(seed: int = 0, vae_from: str | Path = TOY_PIPELINE_DIR) -> FluxKontextPipeline:
    """A randomly initialised toy edit pipeline (deterministic for a seed) with the toy SD3 pipeline's VAE."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextModel

    from rewards.toyedit.world import edit_vocabulary

    from .tokenizer import build_toy_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_toy_tokenizer(edit_vocabulary())
    vae = AutoencoderKL.from_pretrained(Path(vae_from) / "vae", local_files_only=True)
    # FLUX's dynamic shift, anchored at this pipeline's own token count (16) rather than FLUX's 256
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=16,
                                                max_image_seq_len=256)
    return FluxKontextPipeline(
        scheduler=scheduler, vae=vae,
        text_encoder=CLIPTextModel(text_encoder_config(len(tokenizer), tokenizer.eos_token_id)), tokenizer=tokenizer,
        text_encoder_2=edit_t5_encoder(len(tokenizer), tokenizer.pad_token_id),
        tokenizer_2=build_toy_tokenizer(edit_vocabulary()),
        transformer=FluxTransformer2DModel(**edit_transformer_config()),
    )


def load_toy_edit_pipeline(path: str | Path | None = None, **kwargs) -> FluxKontextPipeline:
    """Load the shipped toy edit pipeline (or one saved elsewhere) with ``FluxKontextPipeline.from_pretrained``."""
    from diffusers import FluxKontextPipeline

    path = Path(path) if path is not None else TOY_EDIT_PIPELINE_DIR
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"no pipeline at {path} (model_index.json missing); the toy edit weights are produced "
                                "by `python scripts/pretrain_toy_edit.py`")
    return FluxKontextPipeline.from_pretrained(path, local_files_only=True, **kwargs)


def stock_edit_call_kwargs() -> dict:
    """The arguments the stock ``FluxKontextPipeline.__call__`` needs to sample the toy at its own size."""
    return dict(height=IMAGE_SIZE, width=IMAGE_SIZE, max_area=IMAGE_SIZE * IMAGE_SIZE, _auto_resize=False,
                max_sequence_length=TOY_EDIT_MAX_SEQUENCE_LENGTH, guidance_scale=TOY_EDIT_GUIDANCE_SCALE,
                num_inference_steps=TOY_EDIT_NUM_INFERENCE_STEPS)
