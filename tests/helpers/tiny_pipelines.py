"""Tiny random pipelines of the stock diffusers classes, built offline, for adapter and parity tests.

The configurations follow the diffusers test suites' tiny models (tests/pipelines/flux, tests/pipelines/wan);
the tokenizer is the toy world's word-level CLIP tokenizer, which the T5/UMT5 encoders accept as ids.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

from genrl.toy.tokenizer import build_toy_tokenizer


def _eval(pipe, *modules):
    for module in modules:
        module.eval()  # as from_pretrained leaves them (T5 has dropout)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_pipeline(seed: int = 0, pipeline_class=FluxPipeline) -> FluxPipeline:
    """A FLUX.1-dev-shaped pipeline (guidance embedding, CLIP + T5) of about 100k parameters, 32 x 32 images;
    ``pipeline_class=FluxKontextPipeline`` gives the Kontext one (the same modules, other weights upstream)."""
    torch.manual_seed(seed)
    tokenizer = build_toy_tokenizer()
    vocab = len(tokenizer)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    t5 = T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4))
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = pipeline_class(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tokenizer, text_encoder_2=t5,
                          tokenizer_2=tokenizer, transformer=transformer)
    return _eval(pipe, transformer, clip, t5, vae)


def tiny_flux_kontext_pipeline(seed: int = 0) -> FluxKontextPipeline:
    """The tiny FLUX pipeline as a ``FluxKontextPipeline`` (Kontext differs from FLUX.1 only in weights)."""
    return tiny_flux_pipeline(seed, FluxKontextPipeline)


def wan_unipc_scheduler(flow_shift: float = 3.0, **overrides) -> UniPCMultistepScheduler:
    """Wan2.1's documented scheduler: UniPC on shifted flow sigmas (3.0 for 480p)."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift,
                                   **overrides)


def tiny_wan_pipeline(seed: int = 0, scheduler=None) -> WanPipeline:
    """A Wan2.1 T2V-shaped pipeline (UMT5, 3-D causal VAE, WanTransformer3DModel) of about 300k parameters;
    9 frames of 16 x 16 give latents of (16, 3, 2, 2)."""
    torch.manual_seed(seed)
    tokenizer = build_toy_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=scheduler or wan_unipc_scheduler())
    return _eval(pipe, transformer, text_encoder, vae)
