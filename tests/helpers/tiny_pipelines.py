"""Tiny random pipelines of the stock diffusers classes, built offline, for adapter and parity tests.

The configurations follow the diffusers test suites' tiny models (tests/pipelines/flux, tests/pipelines/wan,
tests/pipelines/stable_audio, tests/pipelines/qwenimage; the Qwen2.5-VL processor is built by hand, offline);
the tokenizer is the toy world's word-level CLIP tokenizer, which the T5/UMT5 encoders accept as ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLQwenImage,
    AutoencoderKLWan,
    AutoencoderOobleck,
    CosineDPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    QwenImageEditPipeline,
    QwenImageTransformer2DModel,
    StableAudioDiTModel,
    StableAudioPipeline,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.pipelines.stable_audio import StableAudioProjectionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

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


def stable_audio_scheduler(**overrides) -> CosineDPMSolverMultistepScheduler:
    """Stable Audio Open 1.0's scheduler (its hub ``scheduler_config.json``); needs ``torchsde``."""
    config = dict(sigma_min=0.3, sigma_max=500, sigma_data=1.0, sigma_schedule="exponential", solver_order=2,
                  prediction_type="v_prediction", final_sigmas_type="zero")
    return CosineDPMSolverMultistepScheduler(**{**config, **overrides})


def known_noise_scheduler(generators: Sequence[torch.Generator], shape: Sequence[int],
                          **overrides) -> CosineDPMSolverMultistepScheduler:
    """The stock Stable Audio scheduler with its Brownian-tree noise replaced by ``randn(shape)`` drawn from one
    generator per sample at every step, in order: the noise the rollout's stochastic steps draw."""
    scheduler = stable_audio_scheduler(**overrides)
    set_timesteps = scheduler.set_timesteps

    def draw(sigma, sigma_next):
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])

    def set_timesteps_with_known_noise(*args, **kwargs):
        set_timesteps(*args, **kwargs)  # resets noise_sampler to None, which step() would fill with a tree
        scheduler.noise_sampler = draw

    scheduler.set_timesteps = set_timesteps_with_known_noise
    return scheduler


def tiny_stable_audio_pipeline(seed: int = 0) -> StableAudioPipeline:
    """A Stable Audio Open-shaped pipeline (T5, projection with seconds conditioners, DiT, Oobleck VAE) of about
    10k parameters: latents (3, 4), 2 s of stereo audio at 4 Hz (7 samples)."""
    torch.manual_seed(seed)
    tokenizer = build_toy_tokenizer()
    transformer = StableAudioDiTModel(sample_size=4, in_channels=3, num_layers=2, attention_head_dim=4,
                                      num_attention_heads=2, num_key_value_attention_heads=2, out_channels=3,
                                      cross_attention_dim=4, time_proj_dim=8, global_states_input_dim=8,
                                      cross_attention_input_dim=4)
    vae = AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=[1, 2], decoder_channels=3,
                             decoder_input_channels=3, audio_channels=2, channel_multiples=[2, 4], sampling_rate=4)
    projection = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=4, min_value=0, max_value=32)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4,
                                           num_layers=2))
    pipe = StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
                               transformer=transformer, scheduler=stable_audio_scheduler())
    return _eval(pipe, transformer, text_encoder, vae, projection)


#: the chat and vision tokens of Qwen2.5-VL's vocabulary that the edit template and the processor use
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>")


def tiny_qwen_vl_processor(max_pixels: int = 56 * 56) -> Qwen2VLProcessor:
    """A Qwen2-VL processor without downloads: a byte-level tokenizer (one token per byte, no merges) with the
    chat and vision special tokens, and the stock image processor with a small ``max_pixels``."""
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    vocab.update({token: len(vocab) + i for i, token in enumerate(QWEN_SPECIAL_TOKENS)})
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=max_pixels),
                            tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor())


def tiny_qwen_image_edit_pipeline(seed: int = 0, pipeline_class: type = QwenImageEditPipeline) -> QwenImageEditPipeline:
    """A Qwen-Image-Edit-shaped pipeline (Qwen2.5-VL text+vision encoder, QwenImage MMDiT, the 3-D Qwen-Image VAE,
    a dynamically shifted FlowMatch scheduler as Qwen-Image's) of about 150k parameters; 32 x 32 edits.
    ``pipeline_class=QwenImageEditPlusPipeline`` gives the Qwen-Image-Edit-2509 pipeline on the same components."""
    torch.manual_seed(seed)
    processor = tiny_qwen_vl_processor()
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    end = ids["<|endoftext|>"]
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "rope_theta": 1e6, "vocab_size": len(tokenizer),
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "bos_token_id": end, "eos_token_id": end},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=len(tokenizer), bos_token_id=end, eos_token_id=end,
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|image_pad|>"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"])
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.1, -0.2, 0.0, 0.3],
                                 latents_std=[1.5, 0.8, 1.0, 2.0])
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02)
    pipe = pipeline_class(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                          processor=processor, transformer=transformer)
    return _eval(pipe, transformer, text_encoder, vae)
