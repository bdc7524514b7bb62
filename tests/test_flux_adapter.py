"""The FLUX.1 adapter on a tiny random FluxPipeline: the noise-free rollout is the pipeline's own sampler."""


import pytest
import torch
from helpers.tiny_pipelines import tiny_flux_kontext_pipeline, tiny_flux_pipeline

from genrl.models import FluxAdapter, build_adapter
from genrl.sampling.rollout import rollout

PROMPTS = ["a photo of a red circle", "a photo of two squares"]


@pytest.fixture(scope="module")
def tiny_flux():
    return tiny_flux_pipeline()


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


def test_kontext_attends_to_the_source_image_and_refuses_a_batch_without_one():
    pipe = tiny_flux_kontext_pipeline()
    adapter = build_adapter("auto", pipe, max_sequence_length=16, height=32, width=32, auto_resize=False,
                            max_area=32 * 32)
    images = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    x = adapter.initial_noise(_gens())
    a = adapter.encode(PROMPTS, conditions=[{"image": images[0]}, {"image": images[1]}])
    b = adapter.encode(PROMPTS, conditions=[{"image": images[0]}, {"image": images[2]}])
    # the condition tokens follow the noisy ones on the grid's second plane, same spatial positions
    assert torch.equal(a.image_ids[:, 0], torch.ones(16 * 16)) and torch.equal(a.image_ids[:, 1:], adapter._image_ids()[:, 1:])
    va, vb = adapter.velocity(x, 0.6, a), adapter.velocity(x, 0.6, b)
    assert va.shape == x.shape
    torch.testing.assert_close(va[0], vb[0], rtol=1e-5, atol=1e-6)  # same source, same prediction
    assert not torch.allclose(va[1], vb[1])
    with pytest.raises(ValueError, match="needs one condition with an 'image' per prompt"):
        adapter.encode(PROMPTS)
    with pytest.raises(ValueError, match="condition 1 has no 'image'"):
        adapter.encode(PROMPTS, conditions=[{"image": images[0]}, {"mask": images[1]}])
    with pytest.raises(ValueError, match="text-only and takes no conditions"):
        FluxAdapter(tiny_flux_pipeline()).encode(PROMPTS, conditions=[{"image": images[0]}, {}])


def test_a_dispatcher_backend_reaches_flux_attention_and_an_unusable_one_is_refused():
    from genrl.models.attention import dispatched_attention, set_attention

    pipe = tiny_flux_pipeline()
    adapter = build_adapter("flux", pipe, guidance_scale=3.5, max_sequence_length=16, height=32, width=32)
    cond = adapter.encode(PROMPTS)
    x = adapter.initial_noise(_gens())
    sdpa = adapter.velocity(x, 0.7, cond)
    assert dispatched_attention(pipe.transformer)
    set_attention(pipe.transformer, "_native_math")  # torch's reference kernel, through the dispatcher
    processors = {type(m.processor).__name__: m.processor._attention_backend.value
                  for m in pipe.transformer.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")}
    assert processors and set(processors.values()) == {"_native_math"}
    torch.testing.assert_close(adapter.velocity(x, 0.7, cond), sdpa, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="'flash_hub' downloads and runs a kernel from the hub"):
        set_attention(pipe.transformer, "flash_hub")
    with pytest.raises(ValueError, match="unknown attention 'fast'; choose sdpa, xformers or a diffusers backend"):
        set_attention(pipe.transformer, "fast")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="'flash' is not usable here"):
            set_attention(pipe.transformer, "flash")
    set_attention(pipe.transformer, "native")  # back to torch SDPA for the other tests of this process
