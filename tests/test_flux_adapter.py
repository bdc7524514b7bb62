"""The FLUX.1 adapter on a tiny random FluxPipeline: the noise-free rollout is the pipeline's own sampler."""

import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from genrl.models import FluxAdapter, build_adapter
from genrl.sampling.rollout import rollout
from genrl.toy.tokenizer import build_toy_tokenizer

PROMPTS = ["a photo of a red circle", "a photo of two squares"]


@pytest.fixture(scope="module")
def tiny_flux():
    torch.manual_seed(0)
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
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tokenizer, text_encoder_2=t5,
                        tokenizer_2=tokenizer, transformer=transformer)
    for module in (transformer, clip, t5, vae):
        module.eval()  # as from_pretrained leaves them (T5 has dropout)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gens(seed=0, n=2):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_noise_free_rollout_reproduces_the_flux_pipeline(tiny_flux):
    adapter = build_adapter("flux", tiny_flux, guidance_scale=3.5, max_sequence_length=16, height=32, width=32)
    assert isinstance(adapter, FluxAdapter) and not adapter.use_cfg
    cond = adapter.encode(PROMPTS)
    sigmas = adapter.schedule(4)
    assert sigmas.shape == (5,) and sigmas[-1] == 0 and sigmas[0] == 1
    x = adapter.initial_noise(_gens())
    traj = rollout(lambda z, s: adapter.velocity(z, s, cond), x, sigmas, step_type="sde", noise_level=0.0)
    reference = tiny_flux(PROMPTS, height=32, width=32, num_inference_steps=4, guidance_scale=3.5,
                          max_sequence_length=16, generator=_gens(), output_type="latent").images
    torch.testing.assert_close(traj.final, reference, rtol=0, atol=1e-6)
    images = adapter.decode(traj.final)
    expected = tiny_flux(PROMPTS, height=32, width=32, num_inference_steps=4, guidance_scale=3.5,
                         max_sequence_length=16, generator=_gens(), output_type="pt").images
    assert images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


def test_guidance_embedding_changes_the_velocity_and_sde_logprob_is_per_sample(tiny_flux):
    adapter = FluxAdapter(tiny_flux, guidance_scale=3.5, max_sequence_length=16, height=32, width=32)
    cond = adapter.encode(PROMPTS)
    x = adapter.initial_noise(_gens(3))
    v1 = adapter.velocity(x, 0.7, cond, guidance_scale=1.0)
    v2 = adapter.velocity(x, 0.7, cond, guidance_scale=3.5)
    assert not torch.allclose(v1, v2)
    traj = rollout(lambda z, s: adapter.velocity(z, s, cond), x, adapter.schedule(4), step_type="cps",
                   noise_level=0.8, window=(0, 2), generators=_gens(7))
    assert traj.log_probs.shape == (2, 2) and torch.isfinite(traj.log_probs).all()
    assert adapter.encode(PROMPTS[:1]).select(slice(0, 1)).embeds.shape[0] == 1


def test_the_trainer_runs_flux_from_a_saved_pipeline(tiny_flux, tmp_path):
    from genrl.config import load_config
    from genrl.trainer import Trainer

    tiny_flux.save_pretrained(tmp_path / "tiny-flux")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    cfg = load_config(None, [
        "epochs=1", "model.family=flux", f"model.pretrained={tmp_path / 'tiny-flux'}", "model.max_sequence_length=16",
        "model.height=32", "model.width=32", "sample.guidance_scale=3.5", "sample.num_steps=3",
        "sample.eval_num_steps=3", "sample.batch_size=4", "sample.group_size=2", "sample.num_batches_per_epoch=1",
        "sample.noise_level=0.9", "lora.rank=4", "lora.alpha=8", "train.ema=false", "train.learning_rate=1e-2",
        "reward.weights={jpeg_compressibility: 1.0}", "reward.options={}",
        "reward.eval={jpeg: {name: jpeg_compressibility}}", f"data.train_prompts={prompts}",
        f"data.test_prompts={prompts}", "log.log_with=[]", f"log.output_dir={tmp_path / 'run'}"])
    trainer = Trainer(cfg)
    record = trainer.train()
    assert record["train/first_ratio_max_dev"] == 0.0 and "eval/jpeg" in record
    assert (tmp_path / "run" / "final" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "run" / "final" / "pipeline" / "model_index.json").is_file()
