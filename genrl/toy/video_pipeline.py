"""The tiny text-to-video pipeline of the Wan2.1 architecture that the toy video world ships.

Its parts are the classes Wan2.1 T2V uses (``WanTransformer3DModel``, ``AutoencoderKLWan``, a ``UMT5EncoderModel``
and Wan's ``UniPCMultistepScheduler`` on flow sigmas) at a tiny size, so a plain ``WanPipeline.from_pretrained(path)``
loads it and its stock call generates ``(B, 9, 32, 32, 3)`` clips.

Sizes: 9 frames of 32 x 32 (the toy video world's). The VAE downsamples space 4x and time 2x (Wan2.1's: 8x and
4x; an object moving 2.5 px per frame would cross a quarter of the canvas within one group of four frames): the
first frame alone, then pairs, so latents are ``(4, 5, 8, 8)``, the image toy's 8 x 8 x 4 per latent frame, and the
transformer (patch 1 x 2 x 2, 4 blocks of width 128) attends over 5 x 4 x 4 = 80 tokens with Wan's 3-D rotary
positions. (No temporal downsampling at all would break the stock call: for a factor of 1 it rounds 9 frames to
10.) The tokenizer is the toy CLIP tokenizer over the video vocabulary (16 tokens).
The VAE's ``latents_mean`` / ``latents_std`` (which the stock pipeline applies) are measured on encoded clips
after its pretraining stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rewards.toyvideo.world import FPS, FRAME_SIZE, NUM_FRAMES

from .pipeline import ASSETS_DIR

if TYPE_CHECKING:
    from diffusers import UniPCMultistepScheduler, WanPipeline

TOY_VIDEO_PIPELINE_DIR = ASSETS_DIR / "wan-toy"
TOY_VIDEO_GUIDANCE_SCALE = 4.5
TOY_VIDEO_NUM_INFERENCE_STEPS = 20
LATENT_CHANNELS = 4
SPATIAL_DOWNSAMPLING = 4
TEMPORAL_DOWNSAMPLING = 2
TEXT_HIDDEN = 64
TRANSFORMER_HEADS, TRANSFORMER_HEAD_DIM = 4, 32


def vae_config() -> dict:
    """A Wan 3-D causal VAE of base width 16 (widths 16, 32, 32) with two spatial and one temporal downsampling."""
    return dict(base_dim=16, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True], scale_factor_temporal=TEMPORAL_DOWNSAMPLING,
                scale_factor_spatial=SPATIAL_DOWNSAMPLING,
                latents_mean=[0.0] * LATENT_CHANNELS, latents_std=[1.0] * LATENT_CHANNELS)


def transformer_config() -> dict:
    """A Wan transformer of 4 blocks, width 128 (4 heads of 32), patch 1 x 2 x 2 over the 4-channel latents."""
    return dict(patch_size=(1, 2, 2), num_attention_heads=TRANSFORMER_HEADS, attention_head_dim=TRANSFORMER_HEAD_DIM,
                in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, text_dim=TEXT_HIDDEN, freq_dim=128,
                ffn_dim=512, num_layers=4, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                rope_max_seq_len=64)


def toy_video_scheduler() -> UniPCMultistepScheduler:
    """Wan2.1's scheduler: UniPC on flow sigmas, with no shift at the toy's 32 px (Wan2.1 shifts by 3 at 480p)."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0)


def build_toy_video_pipeline(seed: int = 0) -> WanPipeline:
    """A randomly initialised toy video pipeline (deterministic for a seed)."""
    import torch
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from rewards.toyvideo.world import video_vocabulary

    from .tokenizer import MODEL_MAX_LENGTH, build_toy_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_toy_tokenizer(video_vocabulary())
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=TEXT_HIDDEN, d_kv=16, d_ff=4 * TEXT_HIDDEN, num_layers=2, num_heads=4,
        relative_attention_num_buckets=16, relative_attention_max_distance=MODEL_MAX_LENGTH, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=tokenizer.pad_token_id))
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=AutoencoderKLWan(**vae_config()),
                       transformer=WanTransformer3DModel(**transformer_config()), scheduler=toy_video_scheduler())


def load_toy_video_pipeline(path: str | Path | None = None, **kwargs) -> WanPipeline:
    """Load the shipped toy video pipeline (or one saved elsewhere) with ``WanPipeline.from_pretrained``."""
    from diffusers import WanPipeline

    path = Path(path) if path is not None else TOY_VIDEO_PIPELINE_DIR
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"no pipeline at {path} (model_index.json missing); the toy video weights are produced "
                                "by `python scripts/pretrain_toy_video.py`")
    return WanPipeline.from_pretrained(path, local_files_only=True, **kwargs)


def ship_toy_video_pipeline(source: str | Path, out_dir: str | Path = TOY_VIDEO_PIPELINE_DIR) -> None:
    """Write the pipeline at ``source`` to ``out_dir`` (default: the package's) with its transformer and VAE weights
    in float16: half the package data. diffusers loads them into float32 modules, so the shipped pipeline is the
    trained one with its weights rounded to float16 (the text encoder, a transformers model, stays float32)."""
    import torch

    from .pretrain import save_atomically

    pipe = load_toy_video_pipeline(source)
    pipe.transformer.to(torch.float16)
    pipe.vae.to(torch.float16)
    save_atomically(pipe, out_dir)


def adapter_options() -> dict:
    """The ``wan`` adapter's options for the toy video pipeline (``model.options`` of its configs)."""
    from .tokenizer import MODEL_MAX_LENGTH

    return {"num_frames": NUM_FRAMES, "height": FRAME_SIZE, "width": FRAME_SIZE, "fps": FPS,
            "max_sequence_length": MODEL_MAX_LENGTH, "guidance_scale": TOY_VIDEO_GUIDANCE_SCALE}


def stock_call_kwargs() -> dict:
    """What the stock ``WanPipeline.__call__`` needs for the toy's clips."""
    from .tokenizer import MODEL_MAX_LENGTH

    return {"num_frames": NUM_FRAMES, "height": FRAME_SIZE, "width": FRAME_SIZE,
            "max_sequence_length": MODEL_MAX_LENGTH, "guidance_scale": TOY_VIDEO_GUIDANCE_SCALE,
            "num_inference_steps": TOY_VIDEO_NUM_INFERENCE_STEPS}
