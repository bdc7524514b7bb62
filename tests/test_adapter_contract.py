"""The model-adapter contract, run over every registered family on a tiny random pipeline of its stock class.

Each case builds the stock diffusers pipeline offline and knows how to call it; the checks are the
contract: registry by pipeline class, parity of the sampler with the stock pipeline (the deterministic
one; for a stock SDE solver, the stochastic one given the same noise), shapes and media, batch-independent
noise, ratio 1 on-policy, noise level 0 == ODE, forward noising == the scheduler's own, LoRA with B = 0 ==
the base model, LoRA export read back by the family's loader (the stock pipeline's own
``load_lora_weights`` where it has one, peft's otherwise), and the merged pipeline saved and loaded by the
stock class's plain ``from_pretrained(dir)``. A new family is added here with its builder and stock call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from diffusers import QwenImageEditPlusPipeline
from helpers.tiny_pipelines import (
    known_noise_scheduler,
    tiny_flux_kontext_pipeline,
    tiny_flux_pipeline,
    tiny_qwen_image_edit_pipeline,
    tiny_stable_audio_pipeline,
    tiny_wan_pipeline,
    wan_unipc_scheduler,
)
from torchvision.transforms.functional import to_pil_image

from genrl.models import MEDIA_KINDS, ModelAdapter, build_adapter, family_names, family_of_pipeline
from genrl.models.loading import absent_components
from genrl.models.lora import ReferencePolicy, adapter_active, add_lora, add_second_adapter, lora_config
from genrl.sampling.rollout import rollout
from genrl.sampling.steps import flow_step
from genrl.toy.pipeline import build_toy_pipeline

PROMPTS = ["a photo of a red circle", "a photo of two squares"]
# the source images of an edit: two different 32 x 32 pictures in [0, 1]
SOURCES = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in (11, 12)]


@dataclass
class Case:
    """How to build a family's tiny pipeline, its adapter options, and the stock pipeline's call."""

    family: str
    build: Callable[[], Any]
    options: dict[str, Any]
    stock_kwargs: dict[str, Any]
    media_shape: tuple[int, ...]  # of one decoded sample
    step_type: str = "sde"
    # a first-order configuration of the stock scheduler, where the shipped one is multistep
    stock_scheduler: Callable[[int], Any] | None = None
    conditions: list[dict[str, Any]] | None = None  # one per prompt, for a family with condition_keys
    # the stock sampler is an SDE solver: parity is of the rollout's ``step_type`` at noise level 1 on every
    # step but the last with the stock scheduler (from ``stock_scheduler``) drawing the same noise
    stochastic_stock: bool = False
    stock_patch: Callable[[], Any] | None = None  # a context the stock call runs in
    # the stock pipeline takes one prompt per call: these kwargs per prompt, the outputs concatenated
    stock_per_prompt: list[dict[str, Any]] | None = None


CASES = {
    # 4 tokens of the toy's null T5 on both sides: the adapter's T5 path is the stock one
    "sd3": Case("sd3", lambda: build_toy_pipeline(seed=3), {"guidance_scale": 4.5, "max_sequence_length": 4},
                {"guidance_scale": 4.5, "max_sequence_length": 4}, (3, 32, 32)),
    "flux": Case("flux", tiny_flux_pipeline,
                 {"guidance_scale": 3.5, "max_sequence_length": 16, "height": 32, "width": 32},
                 {"guidance_scale": 3.5, "max_sequence_length": 16, "height": 32, "width": 32}, (3, 32, 32)),
    "flux_kontext": Case("flux_kontext", tiny_flux_kontext_pipeline,
                         {"guidance_scale": 2.5, "max_sequence_length": 16, "height": 32, "width": 32,
                          "auto_resize": False, "max_area": 32 * 32},
                         {"guidance_scale": 2.5, "max_sequence_length": 16, "height": 32, "width": 32,
                          "image": torch.stack(SOURCES), "_auto_resize": False, "max_area": 32 * 32}, (3, 32, 32),
                         conditions=[{"image": image} for image in SOURCES]),
    # Wan2.1 ships UniPC (multistep, with a corrector); its first-order configuration without the
    # corrector is the DDIM step, which on the flow path is the Euler step the rollout takes.
    "wan": Case("wan", tiny_wan_pipeline,
                {"guidance_scale": 5.0, "num_frames": 9, "height": 16, "width": 16, "max_sequence_length": 16},
                {"guidance_scale": 5.0, "num_frames": 9, "height": 16, "width": 16, "max_sequence_length": 16},
                (9, 3, 16, 16), step_type="wan_sde",
                stock_scheduler=lambda n: wan_unipc_scheduler(solver_order=1, disable_corrector=list(range(n)))),
    # the stock pipeline resizes the source to a fixed 1024^2 area (a module function): patched to the test's 32^2
    "qwen_image_edit": Case("qwen_image_edit", tiny_qwen_image_edit_pipeline,
                            {"guidance_scale": 4.0, "negative_prompt": " ", "height": 32, "width": 32,
                             "condition_area": 32 * 32},
                            {"true_cfg_scale": 4.0, "negative_prompt": [" ", " "], "height": 32, "width": 32,
                             "image": [to_pil_image(image) for image in SOURCES]}, (3, 32, 32),
                            conditions=[{"image": image} for image in SOURCES],
                            stock_patch=lambda: _qwen_condition_area(32 * 32)),
    # Qwen-Image-Edit-2509's pipeline, two sources per prompt: VL reads them at 32^2, the VAE at 64^2 (the stock
    # module's 384^2 and 1024^2 patched); the stock call takes one prompt at a time
    "qwen_image_edit_plus": Case("qwen_image_edit_plus",
                                 lambda: tiny_qwen_image_edit_pipeline(pipeline_class=QwenImageEditPlusPipeline),
                                 {"guidance_scale": 4.0, "negative_prompt": " ", "height": 32, "width": 32,
                                  "condition_area": 64 * 64, "vl_condition_area": 32 * 32},
                                 {"true_cfg_scale": 4.0, "negative_prompt": " ", "height": 32, "width": 32},
                                 (3, 32, 32), conditions=[{"image": list(SOURCES)}, {"image": SOURCES[::-1]}],
                                 stock_patch=lambda: _qwen_plus_areas(32 * 32, 64 * 64),
                                 stock_per_prompt=[{"image": [to_pil_image(image) for image in sources]}
                                                   for sources in (SOURCES, SOURCES[::-1])]),
    # Stable Audio ships SDE-DPM-Solver++(2M) with Brownian-tree noise; its first-order update is DDIM at eta 1
    "stable_audio": Case("stable_audio", tiny_stable_audio_pipeline, {"guidance_scale": 7.0}, {"guidance_scale": 7.0},
                         (2, 7), step_type="ddim", stochastic_stock=True,
                         stock_scheduler=lambda n: known_noise_scheduler(_gens(7), (3, 4), solver_order=1)),
}


@contextlib.contextmanager
def _qwen_condition_area(area: int):
    module = importlib.import_module("diffusers.pipelines.qwenimage.pipeline_qwenimage_edit")
    stock = module.calculate_dimensions
    module.calculate_dimensions = lambda _, ratio: stock(area, ratio)
    try:
        yield
    finally:
        module.calculate_dimensions = stock


@contextlib.contextmanager
def _qwen_plus_areas(vl_area: int, vae_area: int):
    module = importlib.import_module("diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus")
    stock = module.CONDITION_IMAGE_SIZE, module.VAE_IMAGE_SIZE
    module.CONDITION_IMAGE_SIZE, module.VAE_IMAGE_SIZE = vl_area, vae_area
    try:
        yield
    finally:
        module.CONDITION_IMAGE_SIZE, module.VAE_IMAGE_SIZE = stock


def test_every_registered_family_has_a_contract_case():
    assert sorted(CASES) == family_names()


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    c = CASES[request.param]
    return c, c.build()


def _gens(seed=0, n=2):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _adapter(c: Case, pipe) -> ModelAdapter:
    return build_adapter("auto", pipe, **c.options)


def _encode(adapter: ModelAdapter, c: Case, index: slice = slice(None)):
    return adapter.encode(PROMPTS[index], conditions=None if c.conditions is None else c.conditions[index])


def _stock(pipe, c: Case, num_steps: int, output_type: str):
    scheduler = pipe.scheduler
    if c.stock_scheduler is not None:
        pipe.scheduler = c.stock_scheduler(num_steps)
    try:
        with c.stock_patch() if c.stock_patch else contextlib.nullcontext():
            if c.stock_per_prompt is None:
                return _media(pipe(prompt=PROMPTS, num_inference_steps=num_steps, generator=_gens(),
                                   output_type=output_type, **c.stock_kwargs))
            return torch.cat([_media(pipe(prompt=prompt, num_inference_steps=num_steps, generator=generator,
                                          output_type=output_type, **c.stock_kwargs, **extra))
                              for prompt, generator, extra in zip(PROMPTS, _gens(), c.stock_per_prompt, strict=True)])
    finally:
        pipe.scheduler = scheduler


def _media(out) -> torch.Tensor:
    for field in ("frames", "audios", "images"):
        if hasattr(out, field):
            return getattr(out, field)
    raise TypeError(f"unknown pipeline output {type(out).__name__}")


def test_the_pipeline_class_selects_the_family(case):
    c, pipe = case
    adapter = _adapter(c, pipe)
    assert family_of_pipeline(type(pipe).__name__) == c.family == adapter.family
    assert adapter.media_kind in MEDIA_KINDS and adapter.default_lora_targets
    # the transformer blocks FSDP shards one by one exist in the denoiser
    assert sum(type(m).__name__ in adapter.blocks for m in adapter.transformer.modules()) >= 1
    with pytest.raises(ValueError, match="no option 'not_an_option'"):
        build_adapter(c.family, pipe, **c.options, not_an_option=1)


def test_the_sampler_is_the_stock_pipeline(case):
    c, pipe = case
    adapter = _adapter(c, pipe)
    cond = _encode(adapter, c)
    sigmas = adapter.schedule(4)
    assert sigmas.shape == (5,) and sigmas[-1] == 0 and bool((sigmas[1:] < sigmas[:-1]).all())
    x = adapter.initial_noise(_gens())
    fn = lambda z, s: adapter.velocity(z, s, cond)
    if c.stochastic_stock:
        traj = rollout(fn, x, sigmas, step_type=c.step_type, noise_level=1.0, window=(0, 3), generators=_gens(7))
    else:
        traj = rollout(fn, x, sigmas, step_type="sde", noise_level=0.0)
    torch.testing.assert_close(traj.final, _stock(pipe, c, 4, "latent").to(traj.final.dtype), rtol=0, atol=1e-5)
    with torch.no_grad():
        media = adapter.decode(traj.final)
    low = -1.0 if adapter.media_kind == "audio" else 0.0
    assert media.shape == (2, *c.media_shape) and float(media.min()) >= low and float(media.max()) <= 1
    stock = _stock(pipe, c, 4, "pt").to(media.dtype)
    torch.testing.assert_close(media, stock.clamp(low, 1), rtol=0, atol=1e-5)


def test_noise_is_per_generator_and_velocity_per_sample(case):
    c, pipe = case
    adapter = _adapter(c, pipe)
    x = adapter.initial_noise(_gens(0, 2))
    assert torch.equal(x[1:], adapter.initial_noise(_gens(1, 1)))
    cond = _encode(adapter, c)
    sigma = adapter.schedule(4)[1]
    v = adapter.velocity(x, sigma, cond)
    assert v.shape == x.shape
    # a per-sample sigma gives each sample what the scalar gives it; one sample alone gives the same
    torch.testing.assert_close(adapter.velocity(x, sigma.repeat(2), cond), v, rtol=0, atol=1e-5)
    torch.testing.assert_close(adapter.velocity(x[1:], sigma, cond.select(slice(1, 2))), v[1:],
                               rtol=1e-4, atol=1e-5)


def test_noise_level_zero_is_the_ode_and_the_recorded_log_prob_is_on_policy(case):
    c, pipe = case
    adapter = _adapter(c, pipe)
    cond = _encode(adapter, c)
    sigmas = adapter.schedule(4)
    x = adapter.initial_noise(_gens())
    fn = lambda z, s: adapter.velocity(z, s, cond)
    ode = rollout(fn, x, sigmas, step_type="ode", noise_level=0.0, window=(0, 0))
    zero = rollout(fn, x, sigmas, step_type=c.step_type, noise_level=0.0, window=(0, 0))
    torch.testing.assert_close(zero.final, ode.final, rtol=0, atol=0)
    traj = rollout(fn, x, sigmas, step_type=c.step_type, noise_level=0.7, window=(0, 2), generators=_gens(7))
    assert not torch.allclose(traj.final, ode.final)
    for position, j in enumerate(traj.steps):  # ratio 1: the recorded transition scored again
        state = traj.states[:, position]
        out = flow_step(c.step_type, state, fn(state, sigmas[j]), sigmas[j], sigmas[j + 1], 0.7, sigma_max=sigmas[1],
                        sigma_min=sigmas[-1], prev_sample=traj.next_states[:, position])
        torch.testing.assert_close(torch.exp(out.log_prob - traj.log_probs[:, position]), torch.ones(2),
                                   rtol=0, atol=1e-6)


def test_forward_noising_is_the_schedulers_own(case):
    c, pipe = case
    adapter = _adapter(c, pipe)
    x0 = torch.randn(2, *adapter.initial_noise(_gens()).shape[1:], generator=torch.Generator().manual_seed(1))
    noise = adapter.initial_noise(_gens(3))
    scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(4, **({"mu": 0.5} if scheduler.config.get("use_dynamic_shifting") else {}))
    t = scheduler.timesteps[1:2].repeat(2)
    sigma = scheduler.sigmas[1]  # in the scheduler's units; the adapter maps both to its flow coordinates
    expected = (scheduler.scale_noise(x0, t, noise) if hasattr(scheduler, "scale_noise")
                else scheduler.add_noise(x0, noise, t))
    torch.testing.assert_close(adapter.add_noise(x0, noise, adapter.flow_sigma(sigma)),
                               adapter.flow_latents(expected, sigma), rtol=1e-5, atol=1e-6)


def test_lora_starts_at_the_base_model_and_exports_to_the_stock_loader(case, tmp_path):
    c, _ = case
    pipe = c.build()  # LoRA is injected in place: a pipeline of its own
    adapter = _adapter(c, pipe)
    cond = _encode(adapter, c)
    x = adapter.initial_noise(_gens())
    sigma = adapter.schedule(4)[1]
    base = adapter.velocity(x, sigma, cond)
    add_lora(adapter.transformer, lora_config(4, 8, list(adapter.default_lora_targets)))
    # float tolerance, not bit equality: with peft's wrappers in place Stable Audio's DiT already differs from the
    # bare module by ~1e-6 with the adapters disabled (kernel choice); a non-zero B moves it by ~1e-2
    torch.testing.assert_close(adapter.velocity(x, sigma, cond), base, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for name, p in adapter.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    tuned = adapter.velocity(x, sigma, cond)
    assert not torch.allclose(tuned, base)
    # the reference policy is the adapter disabled; a second adapter (NFT's old policy) starts as a frozen copy
    with ReferencePolicy(adapter.transformer).active() as reference:
        torch.testing.assert_close(adapter.velocity(x, sigma, cond, model=reference), base, rtol=1e-5, atol=1e-5)
    trainable = {n for n, p in adapter.transformer.named_parameters() if p.requires_grad}
    add_second_adapter(adapter.transformer, "old")
    assert {n for n, p in adapter.transformer.named_parameters() if p.requires_grad} == trainable
    with adapter_active(adapter.transformer, "old"):
        torch.testing.assert_close(adapter.velocity(x, sigma, cond), tuned, rtol=0, atol=0)
    torch.testing.assert_close(adapter.velocity(x, sigma, cond), tuned, rtol=0, atol=0)
    adapter.export_lora(tmp_path / "lora")
    family = type(adapter)
    reloaded = _adapter(c, family.load_lora(c.build(), tmp_path / "lora"))
    torch.testing.assert_close(reloaded.velocity(x, sigma, _encode(reloaded, c)), tuned, rtol=1e-5, atol=1e-5)
    merged = family.merge_lora(c.build(), tmp_path / "lora")
    assert not any("lora_" in name for name, _ in merged.components[family.denoiser_name].named_parameters())
    merged.save_pretrained(tmp_path / "merged")
    # the stock class with no extra arguments: no required component is saved as null
    assert not set(absent_components(tmp_path / "merged")) - set(merged._optional_components)
    loaded = type(merged).from_pretrained(tmp_path / "merged")
    for pipeline in (merged, loaded):
        merged_adapter = _adapter(c, pipeline)
        torch.testing.assert_close(merged_adapter.velocity(x, sigma, _encode(merged_adapter, c)), tuned,
                                   rtol=1e-4, atol=1e-5)


def test_frozen_components_are_placed_in_their_dtypes(case):
    c, _ = case
    pipe = c.build()
    adapter = _adapter(c, pipe)
    adapter.place_frozen("cpu", torch.bfloat16)
    placed = [name for name in adapter.frozen_components if getattr(pipe, name, None) is not None]
    assert "vae" in placed and len(placed) >= 2
    for name in placed:
        module = getattr(pipe, name)
        dtype = torch.float32 if name in adapter.fp32_components else torch.bfloat16
        assert all(p.dtype == dtype and not p.requires_grad for p in module.parameters()), name


def test_cached_prompt_embeddings_are_the_batch_encoding(case):
    """A prompt's cached row, stacked into any batch, is what encoding that batch gives (CFG's negatives included);
    each (prompt, guidance scale) is encoded once; families without fixed-length rows refuse the cache."""
    from genrl.models.embedding_cache import PromptEmbeddingCache, cat_conditioning

    c, pipe = case
    adapter = _adapter(c, pipe)
    if not adapter.prompt_embeddings_cacheable:
        assert c.conditions is not None  # only the editing families, which condition on images
        with pytest.raises(ValueError, match="does not cache prompt embeddings"):
            PromptEmbeddingCache(adapter)
        return
    cache = PromptEmbeddingCache(adapter)
    batch = [PROMPTS[1], PROMPTS[0], PROMPTS[1]]
    def same(got, expected):
        for f in dataclasses.fields(expected):
            want, have = getattr(expected, f.name), getattr(got, f.name)
            assert (want is None) == (have is None), f.name
            if isinstance(want, torch.Tensor):
                torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6, msg=f.name)

    for guidance in (None, 1.0, 5.0):
        expected = adapter.encode(batch, guidance_scale=guidance)
        same(cache.encode(batch, guidance_scale=guidance), expected)  # encodes the two prompts
        same(cache.encode(batch[::-1], guidance_scale=guidance), adapter.encode(batch[::-1], guidance_scale=guidance))
        restacked = cat_conditioning([expected.select(slice(i, i + 1)) for i in range(len(batch))])
        assert all(torch.equal(getattr(restacked, f.name), getattr(expected, f.name))
                   for f in dataclasses.fields(expected) if isinstance(getattr(expected, f.name), torch.Tensor))
    assert (cache.misses, cache.hits) == (2 * 3, 4 * 3)  # 2 prompts x 3 scales encoded, the rest served
