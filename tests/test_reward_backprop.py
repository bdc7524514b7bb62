"""Reward backpropagation (DRaFT-K / AlignProp): the loss's gradient is the truncated chain rule through the last K
steps, the decoder and the reward (checked against a hand-written tail and finite differences), K = 0 steps reach
no generator weight, the regulariser vanishes at the reference, bad configs are refused by key, and a short toy
run raises its differentiable reward."""

import pytest
import torch
from test_sd3_rollout import _lora_policy
from test_trainer import CONFIGS, tiny_overrides

from genrl.algorithms.base import LossContext, RolloutBatch
from genrl.algorithms.reward_backprop import RewardBackprop, kept_steps
from genrl.config import ConfigError, load_config
from genrl.sampling.steps import ode_step
from genrl.trainer import Trainer
from rewards import WeightedSum
from rewards.brightness import LUMA, BrightnessReward
from rewards.seeding import derived_seed

PROMPTS = ["a photo of a red circle", "a photo of two squares"]
KEY = (7, 0, 0, 0)  # the unit's seed key: (seed, epoch, iteration, process)


def _policy(num_steps: int = 4):
    """A random toy model with a non-zero LoRA: (adapter, LoRA parameters)."""
    adapter, params, *_ = _lora_policy(num_steps)
    return adapter, params


def _algorithm(grad_steps: int, num_steps: int = 4, **extra) -> RewardBackprop:
    values = {"train.algorithm": "reward_backprop", "sample.num_steps": num_steps, "sample.noise_level": 0.0,
              "sample.same_latent": False, "backprop.grad_steps": grad_steps, "reward.weights": "{brightness: 1.0}",
              "reward.options": "{}", **extra}
    algo = RewardBackprop(load_config(None, [f"{k}={v}" for k, v in values.items()]))
    algo.reward_fn = WeightedSum({"brightness": BrightnessReward()})
    return algo


def _unit(adapter, num_steps: int) -> RolloutBatch:
    return RolloutBatch(torch.tensor([0, 1]), PROMPTS, [{}, {}], None, adapter.schedule(num_steps), None,
                        extras={"seed_key": KEY})


def _start(adapter, num_steps: int):
    """The prompts' conditioning, the schedule and the algorithm's initial noise (its seeds, independent code)."""
    gens = [torch.Generator().manual_seed(derived_seed(*KEY, "init", b)) for b in range(2)]
    return adapter.encode(PROMPTS), adapter.schedule(num_steps), adapter.initial_noise(gens)


def _euler(adapter, cond, sigmas, z, steps) -> torch.Tensor:
    for j in steps:
        z = ode_step(z, adapter.velocity(z, sigmas[j], cond), sigmas[j], sigmas[j + 1]).prev_sample
    return z


def _negative_brightness(adapter, z) -> torch.Tensor:
    images = adapter.decode(z).float()
    return -(images * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1).mean((1, 2)).mean()


def _hand_written_loss(adapter, num_steps: int, k: int) -> torch.Tensor:
    """-mean brightness of the decoded images, the first ``num_steps - k`` Euler steps without a graph and the
    last ``k`` with one."""
    cond, sigmas, z = _start(adapter, num_steps)
    with torch.no_grad():
        z = _euler(adapter, cond, sigmas, z, range(num_steps - k))
    return _negative_brightness(adapter, _euler(adapter, cond, sigmas, z, range(num_steps - k, num_steps)))


def _hand_written_one_step_loss(adapter, num_steps: int, j: int) -> torch.Tensor:
    """-mean brightness of ``x_j - sigma_j v(x_j)`` decoded, ``x_j`` from ``j`` Euler steps without a graph."""
    cond, sigmas, z = _start(adapter, num_steps)
    with torch.no_grad():
        z = _euler(adapter, cond, sigmas, z, range(j))
    return _negative_brightness(adapter, z - sigmas[j] * adapter.velocity(z, sigmas[j], cond))  # schedules end at 0


def _assert_same_nonzero_gradients(loss, want_loss, params) -> None:
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(want_loss, params, allow_unused=True)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-8)
    assert any(float(w.abs().max()) > 0 for w in want)


@pytest.mark.parametrize("k", [1, 3])
def test_the_loss_gradient_is_the_truncated_chain_rule_through_decoder_and_reward(k):
    adapter, params = _policy()
    algo = _algorithm(k)
    ctx = LossContext(adapter, adapter.transformer, None)
    loss, metrics = algo.loss(ctx, _unit(adapter, 4), 0)
    assert metrics["kept_steps"] == k
    _assert_same_nonzero_gradients(loss, _hand_written_loss(adapter, 4, k), params)


@pytest.mark.parametrize("j", [0, 2])
def test_one_step_truncation_backpropagates_the_one_step_prediction_from_step_j(j):
    adapter, params = _policy()
    assert float(adapter.schedule(4)[-1]) == 0.0
    algo = _algorithm(1, **{"backprop.truncation": "one_step", "backprop.one_step_range": f"[{j},{j + 1}]"})
    loss, metrics = algo.loss(LossContext(adapter, adapter.transformer, None), _unit(adapter, 4), 0)
    assert metrics["one_step_index"] == j
    _assert_same_nonzero_gradients(loss, _hand_written_one_step_loss(adapter, 4, j), params)


def test_one_step_indices_cover_their_range_and_a_bad_range_is_refused_by_key():
    from genrl.algorithms.reward_backprop import one_step_index

    g = torch.Generator().manual_seed(0)
    assert {one_step_index(10, [2, 5], g) for _ in range(200)} == {2, 3, 4}
    assert {one_step_index(4, None, g) for _ in range(200)} == {0, 1, 2, 3}
    base = ["train.algorithm=reward_backprop", "backprop.truncation=one_step", "sample.num_steps=10"]
    with pytest.raises(ConfigError, match="backprop.one_step_range"):
        load_config(CONFIGS / "toy_backprop.yaml", [*base, "backprop.one_step_range=[2,12]"])


def test_with_every_step_kept_the_gradient_matches_finite_differences():
    adapter, params = _policy(3)
    algo = _algorithm(3, num_steps=3)
    ctx = LossContext(adapter, adapter.transformer, None)
    weight = params[1]  # a LoRA B matrix
    direction = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(algo.loss(ctx, _unit(adapter, 3), 0)[0], [weight])
    eps = 0.1  # the loss is float32: a smaller step drowns in its rounding
    with torch.no_grad():
        weight.add_(eps * direction)
        plus = algo.loss(ctx, _unit(adapter, 3), 0)[0].double()
        weight.sub_(2 * eps * direction)
        minus = algo.loss(ctx, _unit(adapter, 3), 0)[0].double()
        weight.add_(eps * direction)
    numeric = float((plus - minus) / (2 * eps))
    analytic = float((grad * direction).sum())
    assert abs(analytic) > 1e-6
    assert analytic == pytest.approx(numeric, rel=2e-2)


def test_no_kept_step_reaches_no_generator_weight():
    adapter, params = _policy()
    from genrl.generation import generate

    gens = [torch.Generator().manual_seed(b) for b in range(2)]
    out = generate(adapter, PROMPTS, [{}, {}], sigmas=adapter.schedule(4), noise_generators=gens,
                   grad_from=None)  # K = 0: no step keeps gradients
    grads = torch.autograd.grad(out.media.tensor.mean(), params, allow_unused=True) \
        if out.media.tensor.requires_grad else [None] * len(params)  # the toy VAE here is not frozen
    assert all(g is None for g in grads)
    with pytest.raises(ValueError, match="grad_steps=0"):
        kept_steps(4, 0, "fixed", torch.Generator())


def test_random_truncation_draws_every_k_from_one_to_grad_steps():
    g = torch.Generator().manual_seed(0)
    assert {kept_steps(10, 4, "random", g) for _ in range(200)} == {1, 2, 3, 4}
    assert {kept_steps(10, 4, "fixed", g) for _ in range(20)} == {4}


def test_bad_reward_backprop_configs_are_refused_by_key(tmp_path):
    base = tiny_overrides(tmp_path, **{"train.algorithm": "reward_backprop", "sample.same_latent": False,
                                       "sample.noise_level": 0.0, "backprop.grad_steps": 2})
    with pytest.raises(ConfigError, match="backprop.grad_steps"):
        load_config(CONFIGS / "toy_backprop.yaml", [*base, "backprop.grad_steps=5"])
    with pytest.raises(ConfigError, match="backprop.truncation"):
        load_config(CONFIGS / "toy_backprop.yaml", [*base, "backprop.truncation=sometimes"])
    with pytest.raises(ConfigError, match="same_latent"):
        load_config(CONFIGS / "toy_backprop.yaml", [*base, "sample.same_latent=true"])
    cfg = load_config(CONFIGS / "toy_backprop.yaml", [*base, "reward.weights={toy_verifier: 1.0}",
                                                      "reward.options={toy_verifier: {mode: partial}}"])
    with pytest.raises(ConfigError, match=r"reward\.weights\.toy_verifier.*not differentiable"):
        Trainer(cfg)


def test_the_regulariser_is_zero_at_the_reference_and_grows_as_the_policy_leaves_it(tmp_path):
    trainer = Trainer(load_config(CONFIGS / "toy_backprop.yaml", tiny_overrides(
        tmp_path, **{"epochs": 3, "train.beta": 1.0, "backprop.grad_steps": 2, "reward.weights": "{brightness: 1.0}",
                     "reward.options": "{}", "reward.eval": "{}", "train.learning_rate": 3e-2})))
    regulariser = []
    for epoch in range(3):
        record = trainer.algorithm.run_epoch(trainer, epoch)
        regulariser.append(record["train/regulariser"])
    assert regulariser[0] == 0.0  # LoRA B = 0: the policy is the reference on every kept state
    assert regulariser[2] > 0.0


@pytest.mark.timeout(600)
def test_a_short_toy_run_raises_its_differentiable_reward(tmp_path):
    """Brightness backpropagated through the last two steps of the toy pipeline: the training reward of the last
    epochs exceeds that of the first (each epoch's images come from fresh noise)."""
    trainer = Trainer(load_config(CONFIGS / "toy_backprop.yaml", tiny_overrides(
        tmp_path, **{"epochs": 12, "sample.batch_size": 8, "backprop.grad_steps": 2, "train.learning_rate": 1e-2,
                     "reward.weights": "{brightness: 1.0}", "reward.options": "{}", "reward.eval": "{}"})))
    rewards = [trainer.algorithm.run_epoch(trainer, epoch)["reward/mean"] for epoch in range(12)]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.01, rewards
