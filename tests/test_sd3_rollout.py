import pytest
import torch

from genrl.models.sd3 import SD3Adapter, t5_tokens_dropped
from genrl.sampling.rollout import rollout, sde_window
from genrl.toy.pipeline import build_toy_pipeline

PROMPTS = ["a photo of a red circle", "a photo of two squares"]


@pytest.fixture(scope="module")
def random_toy():
    """The toy architecture with random weights: the rollout maths must not depend on training."""
    pipe = build_toy_pipeline(seed=3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gens(seed=0, n=2):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


@pytest.mark.parametrize("guidance", [1.0, 4.5])
def test_noise_level_zero_rollout_reproduces_the_diffusers_pipeline(random_toy, guidance):
    adapter = SD3Adapter(random_toy, guidance_scale=guidance, max_sequence_length=0)
    cond = adapter.encode(PROMPTS)
    sigmas = adapter.schedule(6)
    x = adapter.initial_noise(_gens())
    traj = rollout(lambda z, s: adapter.velocity(z, s, cond), x, sigmas, step_type="sde", noise_level=0.0)
    with t5_tokens_dropped(random_toy, 0):  # no T5 tokens in the stock call either
        reference = random_toy(PROMPTS, num_inference_steps=6, guidance_scale=guidance, max_sequence_length=0,
                               generator=_gens(), output_type="latent").images
    assert torch.equal(traj.final, reference)


def test_no_t5_tokens_equal_the_pipeline_without_its_t5_and_the_null_t5_emits_zeros(random_toy):
    with_t5 = SD3Adapter(random_toy, guidance_scale=4.5, max_sequence_length=6).encode(PROMPTS)
    none = SD3Adapter(random_toy, guidance_scale=4.5, max_sequence_length=0).encode(PROMPTS)
    assert with_t5.embeds.shape[1] == none.embeds.shape[1] + 6 and none.embeds.shape[1] == 16  # the CLIP tokens
    assert torch.equal(with_t5.embeds[:, :16], none.embeds) and not with_t5.embeds[:, 16:].any()
    assert torch.equal(with_t5.negative_embeds[:, :16], none.negative_embeds)
    # hiding the T5 for a call leaves the pipeline's encoder and its config (what it saves) as they were
    assert random_toy.text_encoder_3 is not None and random_toy.config.text_encoder_3[1] == "T5EncoderModel"


def test_windowed_rollout_records_only_window_steps_and_is_reproducible(random_toy):
    adapter = SD3Adapter(random_toy, guidance_scale=4.5, max_sequence_length=0)
    cond = adapter.encode(PROMPTS)
    sigmas = adapter.schedule(8)
    x = adapter.initial_noise(_gens(5))
    run = lambda: rollout(lambda z, s: adapter.velocity(z, s, cond), x, sigmas, step_type="cps", noise_level=0.8,
                          window=(2, 5), generators=_gens(9))
    a, b = run(), run()
    assert a.steps == [2, 3, 4] and a.states.shape[:2] == (2, 3) and a.log_probs.shape == (2, 3)
    assert torch.equal(a.final, b.final)
    # Consecutive recorded transitions chain: the state after step 2 is the state before step 3.
    assert torch.equal(a.next_states[:, 0], a.states[:, 1])
    # Outside the window the rollout is the ODE: the same window with no noise matches a pure ODE run.
    ode = rollout(lambda z, s: adapter.velocity(z, s, cond), x, sigmas, step_type="sde", noise_level=0.0)
    assert not torch.allclose(a.final, ode.final)


def test_cfg_is_one_batched_forward(random_toy):
    adapter = SD3Adapter(random_toy, guidance_scale=3.0, max_sequence_length=0)
    cond = adapter.encode(PROMPTS)
    calls = []
    hook = random_toy.transformer.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        x = adapter.initial_noise(_gens())
        v = adapter.velocity(x, torch.tensor(0.5), cond)
    finally:
        hook.remove()
    assert len(calls) == 1
    cond_only = adapter.velocity(x, torch.tensor(0.5), cond, guidance_scale=1.0)
    uncond = SD3Adapter(random_toy, guidance_scale=1.0, max_sequence_length=0).velocity(
        x, torch.tensor(0.5), type(cond)(cond.negative_embeds, cond.negative_pooled))
    torch.testing.assert_close(v, uncond + 3.0 * (cond_only - uncond), rtol=1e-4, atol=1e-5)


def test_sde_window_bounds():
    g = torch.Generator().manual_seed(0)
    starts = {sde_window(10, 3, (0, 5), g)[0] for _ in range(200)}
    assert starts == {0, 1, 2}
    assert sde_window(10, 0, None) == (0, 10)
    with pytest.raises(ValueError, match="does not fit"):
        sde_window(10, 6, (0, 5))


def _lora_policy(num_steps: int):
    """A random toy model with a non-zero LoRA: (adapter, LoRA parameters, conditioning, sigmas, x_T)."""
    from genrl.models.lora import add_lora, lora_config

    pipe = build_toy_pipeline(seed=3)
    params = add_lora(pipe.transformer, lora_config(4, 8, list(SD3Adapter.default_lora_targets)))
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(p.numel()))
    adapter = SD3Adapter(pipe, guidance_scale=1.0, max_sequence_length=0)
    return adapter, params, adapter.encode(PROMPTS), adapter.schedule(num_steps), adapter.initial_noise(_gens())


def test_a_rollout_keeps_gradients_from_grad_from_on_and_they_are_the_truncated_chain_rule():
    from genrl.sampling.steps import ode_step

    adapter, params, cond, sigmas, x = _lora_policy(4)
    fn = lambda z, s: adapter.velocity(z, s, cond)
    assert not rollout(fn, x, sigmas, window=(0, 0)).final.requires_grad  # no graph by default
    grads = {}
    for checkpoint in (True, False):
        final = rollout(fn, x, sigmas, window=(0, 0), grad_from=2, checkpoint=checkpoint).final
        grads[checkpoint] = torch.autograd.grad(final.square().mean(), params)
    # independent: the first two steps without a graph, the last two by hand with one
    with torch.no_grad():
        z = x
        for j in range(2):
            z = ode_step(z, fn(z, sigmas[j]), sigmas[j], sigmas[j + 1]).prev_sample
    for j in range(2, 4):
        z = ode_step(z, fn(z, sigmas[j]), sigmas[j], sigmas[j + 1]).prev_sample
    expected = torch.autograd.grad(z.square().mean(), params)
    for got_ckpt, got_plain, want in zip(grads[True], grads[False], expected, strict=True):
        torch.testing.assert_close(got_ckpt, want, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got_plain, want, rtol=1e-4, atol=1e-7)
    assert any(float(g.abs().max()) > 0 for g in expected)
    with pytest.raises(ValueError, match="grad_from=4"):
        rollout(fn, x, sigmas, grad_from=4)


def test_full_backprop_through_stochastic_steps_matches_finite_differences():
    adapter, params, cond, sigmas, x = _lora_policy(3)

    def loss() -> torch.Tensor:
        final = rollout(lambda z, s: adapter.velocity(z, s, cond), x, sigmas, step_type="sde", noise_level=0.7,
                        window=(0, 2), generators=_gens(5), grad_from=0).final
        return final.double().square().mean()

    weight = params[1]  # a LoRA B matrix
    direction = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(loss(), [weight])
    eps = 1e-2
    with torch.no_grad():
        weight.add_(eps * direction)
        up = loss()
        weight.sub_(2 * eps * direction)
        down = loss()
        weight.add_(eps * direction)
    assert float((grad * direction).sum()) == pytest.approx(float((up - down) / (2 * eps)), rel=2e-2)
