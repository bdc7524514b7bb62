from collections import Counter

import numpy as np
import pytest
import torch

from genrl.algorithms.advantages import group_advantages
from genrl.algorithms.losses import ppo_clip_loss, step_kl
from genrl.algorithms.sampler import KRepeatSampler, family_weights


def _groups(n_groups=4, k=6, seed=0):
    rng = np.random.default_rng(seed)
    rewards = torch.tensor(rng.normal(size=n_groups * k))
    ids = [f"prompt {i}" for i in range(n_groups) for _ in range(k)]
    return rewards, ids


@pytest.mark.parametrize("global_std", [True, False])
def test_group_advantages_match_numpy_and_have_zero_group_mean(global_std):
    rewards, ids = _groups()
    out = group_advantages(rewards, ids, global_std=global_std, clip=100.0)
    r = rewards.numpy().reshape(4, 6)
    sd = r.std() if global_std else r.std(axis=1, keepdims=True)
    expected = (r - r.mean(axis=1, keepdims=True)) / (sd + 1e-4)
    np.testing.assert_allclose(out.advantages.numpy().reshape(4, 6), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.advantages.numpy().reshape(4, 6).mean(axis=1), 0.0, atol=1e-6)
    assert out.keep.all()


def test_zero_std_groups_are_dropped_and_counted():
    rewards, ids = _groups()
    rewards[6:12] = 0.5
    out = group_advantages(rewards, ids)
    assert not out.keep[6:12].any() and out.keep[:6].all()
    assert torch.equal(out.advantages[6:12], torch.zeros(6))
    assert out.stats["zero_std_ratio"] == 0.25


def test_nonfinite_rewards_are_excluded_not_averaged_in():
    rewards, ids = _groups()
    clean = group_advantages(rewards[1:], ids[1:], global_std=False)
    poisoned = rewards.clone()
    poisoned[0] = float("nan")
    out = group_advantages(poisoned, ids, global_std=False)
    assert not out.keep[0] and out.advantages[0] == 0 and out.stats["nonfinite"] == 1
    torch.testing.assert_close(out.advantages[1:], clean.advantages)


def test_clipping_and_group_size_one_fallback():
    out = group_advantages(torch.tensor([0.0] * 40 + [1000.0]), [0] * 41, clip=5.0)  # z of the outlier: sqrt(40)
    assert out.advantages.abs().max() == 5.0
    single = group_advantages(torch.tensor([1.0, 2.0, 3.0]), ["a", "b", "c"])
    assert single.stats["group_size_one"] == 1.0 and single.keep.all()
    torch.testing.assert_close(single.advantages, torch.tensor([-1.0, 0.0, 1.0]) / (np.std([1, 2, 3]) + 1e-4),
                               check_dtype=False)


def test_single_sample_groups_get_the_batch_z_score_next_to_larger_groups():
    rewards = torch.tensor([0.1, 0.9, 0.3, 0.7, 0.2, 0.4, 0.8, 0.5, 0.5])
    ids = ["a", "b", "c", "c", "d", "d", "d", "e", "e"]  # a, b single; c, d compared within; e all equal
    out = group_advantages(rewards, ids, global_std=False, clip=100.0)
    r = rewards.double().numpy()
    batch_z = (r - r.mean()) / (r.std() + 1e-4)
    np.testing.assert_allclose(out.advantages[:2].numpy(), batch_z[:2], rtol=1e-6)
    for members in ([2, 3], [4, 5, 6]):
        group = r[members]
        np.testing.assert_allclose(out.advantages[members].numpy(), (group - group.mean()) / (group.std() + 1e-4),
                                   rtol=1e-5)
    assert out.keep.tolist() == [True] * 7 + [False] * 2  # only the zero-std group of two is dropped
    assert out.stats["group_size_one"] == 2 / 5 and out.stats["zero_std_ratio"] == 1 / 5


def test_group_size_one_with_a_prompt_drawn_twice_keeps_every_sample():
    # sample.group_size=1 over an epoch of 16 samples in which one prompt came up twice: groups of
    # one, and one of two; every sample must train (not 1/16 of them)
    ids = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3]
    rewards = torch.tensor(np.random.default_rng(1).uniform(size=16))
    out = group_advantages(rewards, ids)
    assert out.keep.all() and (out.advantages != 0).all()


def test_a_group_left_with_one_finite_reward_is_masked_not_compared_with_the_batch():
    # group_size=4: "a" lost three rewards to NaN, "b" is whole; the survivor of "a" has no group to compare with
    nan = float("nan")
    rewards = torch.tensor([0.9, nan, nan, nan, 0.1, 0.2, 0.3, 0.4])
    out = group_advantages(rewards, ["a"] * 4 + ["b"] * 4, global_std=False)
    assert out.keep.tolist() == [False] * 4 + [True] * 4 and out.advantages[0] == 0
    assert out.stats["group_size_one"] == 0.0 and out.stats["num_groups"] == 2
    clean = group_advantages(rewards[4:], ["b"] * 4, global_std=False)
    torch.testing.assert_close(out.advantages[4:], clean.advantages)


def test_ppo_clip_loss_closed_form():
    lp_old = torch.tensor([0.0, 0.0, 0.0, 0.0])
    lp = torch.tensor([0.2, -0.2, 0.2, -0.2], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    out = ppo_clip_loss(lp, lp_old, adv, clip_range=0.1)
    r = torch.exp(lp.detach())
    expected = torch.stack([-torch.minimum(r[0], torch.tensor(1.1)), -r[1], torch.maximum(r[2], torch.tensor(0.9)),
                            torch.clamp(r[3], 0.9, 1.1)]).mean()
    torch.testing.assert_close(out.loss.detach(), expected)
    assert out.clipfrac == 1.0
    out.loss.backward()
    # Clipped terms carry no gradient: only sample 1 (A>0, r<1) and 2 (A<0, r>1) do.
    assert lp.grad[0] == 0 and lp.grad[3] == 0 and lp.grad[1] != 0 and lp.grad[2] != 0


def test_on_policy_loss_is_minus_mean_advantage_with_ratio_one():
    lp = torch.randn(8)
    adv = torch.randn(8)
    out = ppo_clip_loss(lp, lp.clone(), adv, 1e-4)
    assert out.ratio_mean == 1.0 and out.clipfrac == 0.0 and out.approx_kl == 0.0
    torch.testing.assert_close(out.loss, -adv.mean())


def test_step_kl_conventions():
    mean, ref = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    std, dt = torch.tensor(0.3), -0.1
    paper = step_kl(mean, ref, std, dt, "paper")
    code = step_kl(mean, ref, std, dt, "code")
    torch.testing.assert_close(paper, ((mean - ref) ** 2 / (2 * 0.09)).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(code, paper * 0.1)
    assert torch.equal(step_kl(mean, mean, std, dt), torch.zeros(2))


def test_k_repeat_sampler_keeps_groups_in_one_iteration_across_ranks():
    ranks = [KRepeatSampler(50, batch_size=6, k=4, num_replicas=2, rank=r, seed=1) for r in range(2)]
    for _ in range(3):
        batches = [next(iter(s)) for s in ranks]
        union = Counter(batches[0] + batches[1])
        assert len(union) == 3 and set(union.values()) == {4}
    single = KRepeatSampler(50, batch_size=12, k=4, seed=1)
    assert Counter(single.global_layout(0)) == Counter(ranks[0].global_layout(0))
    resumed = KRepeatSampler(50, batch_size=6, k=4, num_replicas=2, rank=0, seed=1)
    resumed.load_state_dict(ranks[0].state_dict())
    assert next(iter(resumed)) == next(iter(ranks[0]))
    with pytest.raises(ValueError, match="must divide"):
        KRepeatSampler(50, batch_size=5, k=4)


def test_family_balanced_sampler_gives_each_family_an_equal_share_and_keeps_groups_whole():
    families = ["big"] * 40 + ["mid"] * 8 + ["small"] * 2
    weights = family_weights(families)
    assert sum(weights) == pytest.approx(1.0)
    ranks = [KRepeatSampler(50, batch_size=4, k=4, num_replicas=2, rank=r, seed=3, weights=weights) for r in range(2)]
    drawn = Counter()
    for _ in range(3000):
        batches = [next(iter(s)) for s in ranks]
        union = Counter(batches[0] + batches[1])
        assert len(union) == 2 and set(union.values()) == {4}  # two distinct prompts, whole groups
        drawn.update(families[i] for i in union)
    shares = {f: n / 6000 for f, n in drawn.items()}
    # uniform sampling would give big/mid/small 0.80/0.16/0.04
    assert shares == pytest.approx({"big": 1 / 3, "mid": 1 / 3, "small": 1 / 3}, abs=0.03)


def test_weighted_sampler_never_draws_banned_or_zero_weight_prompts():
    weights = [0.0] * 5 + [1.0] * 5
    sampler = KRepeatSampler(10, batch_size=4, k=2, seed=0, weights=weights)
    sampler.banned = {5, 6}
    seen = {i for it in range(200) for i in sampler.global_layout(it)}
    assert seen == {7, 8, 9}
    assert sampler.drawable() == 3 and sampler.prompts_per_iteration == 2 and not sampler.exhausted()
    sampler.banned = {5, 6, 7, 8}
    assert sampler.drawable() == 1 and sampler.exhausted()
    with pytest.raises(RuntimeError, match="not banned"):
        sampler.global_layout(0)
    with pytest.raises(ValueError, match="finite non-negative"):
        KRepeatSampler(10, batch_size=4, k=2, weights=[1.0] * 9)
    with pytest.raises(ValueError, match="positive weight"):
        KRepeatSampler(10, batch_size=4, k=2, weights=[1.0] + [0.0] * 9)


@pytest.mark.parametrize("overrides, trained", [
    (["sample.window_size=2"], 2),  # the default fraction 0.99 must not drop a window step (int(2 * 0.99) = 1)
    (["sample.window_size=3", "sample.window_range=[0,5]"], 3),
    (["sample.window_size=3", "train.timestep_fraction=0.5"], 3),
    (["sample.window_size=0", "sample.num_steps=10"], 9),  # no window: int(T * fraction), the last step left out
    (["sample.window_size=0", "sample.num_steps=10", "train.timestep_fraction=0.5"], 5),
])
def test_flow_grpo_trains_every_window_step_and_a_fraction_without_a_window(overrides, trained):
    from genrl.algorithms.flow_grpo import FlowGRPO
    from genrl.config import load_config

    cfg = load_config(None, ["train.timestep_fraction=0.99", *overrides])
    assert FlowGRPO(cfg).num_train_units() == trained


def test_per_reward_advantages_sum_each_rewards_own_group_z_score():
    from genrl.algorithms.advantages import per_reward_advantages

    rng = np.random.default_rng(3)
    q, s = rng.normal(size=(3, 8)), rng.uniform(size=(3, 8))
    s[1] = 0.5  # the second reward is constant in group 1: only the first reward speaks there
    ids = [g for g in range(3) for _ in range(8)]
    out = per_reward_advantages(torch.tensor(np.stack([q.ravel(), s.ravel()], 1)), [1.0, 0.5], ids,
                                global_std=False, clip=100.0)

    def z(r):
        sd = r.std(axis=1, keepdims=True)
        return np.where(sd > 0, (r - r.mean(axis=1, keepdims=True)) / (sd + 1e-4), 0.0)
    np.testing.assert_allclose(out.advantages.numpy().reshape(3, 8), z(q) + 0.5 * z(s), rtol=1e-5, atol=1e-6)
    assert out.keep.all() and out.stats["zero_std_ratio"] == 0
    # differs from the advantage of the weighted sum
    summed = group_advantages(torch.tensor((q + 0.5 * s).ravel()), ids, global_std=False, clip=100.0)
    assert not torch.allclose(summed.advantages, out.advantages, atol=1e-3)
    # a non-finite component drops its sample; clipping applies per reward before the sum
    q[0, 0] = np.nan
    out = per_reward_advantages(torch.tensor(np.stack([q.ravel(), s.ravel()], 1)), [1.0, 1.0], ids, clip=0.1)
    assert not out.keep[0] and out.advantages[0] == 0 and out.advantages.abs().max() <= 0.2 + 1e-6


def test_best_and_worst_keeps_each_groups_extremes():
    from genrl.algorithms.advantages import best_and_worst

    rewards = torch.tensor([5.0, 1.0, 3.0, 4.0, 2.0, 0.0, float("nan"), 9.0, 8.0, 7.0])
    ids = ["a"] * 6 + ["b"] * 4
    keep = best_and_worst(rewards, ids, 4)
    # a: the two lowest (0, 1) and two highest (4, 5); b: its three finite rewards are kept whole
    assert keep.tolist() == [True, True, False, True, False, True, False, True, True, True]
    with pytest.raises(ValueError, match="even count"):
        best_and_worst(rewards, ids, 3)


def test_flow_grpo_with_best_and_worst_takes_advantages_within_the_subset():
    from genrl.algorithms.flow_grpo import FlowGRPO
    from genrl.config import load_config

    algo = FlowGRPO(load_config(None, ["train.best_and_worst=2", "sample.global_std=false"]))
    algo.reward_weights = {"r": 1.0}
    rewards = torch.tensor([0.0, 1.0, 2.0, 10.0])
    out = algo.compute_advantages(rewards, ["p"] * 4)
    assert out.keep.tolist() == [True, False, False, True]
    np.testing.assert_allclose(out.advantages.numpy(), [-5 / (5 + 1e-4), 0, 0, 5 / (5 + 1e-4)], atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["train.best_and_worst=3"], "even number"),
    (["train.algorithm=tp_grpo", "train.per_reward_advantages=true"], "apply to flow_grpo and adv_grpo, not 'tp_grpo'"),
])
def test_pisces_grpo_options_are_checked(overrides, message):
    from genrl.config import ConfigError, load_config, validate

    with pytest.raises(ConfigError, match=message):
        validate(load_config(None, overrides))


def test_flow_grpo_hands_the_reward_components_in_the_weights_order():
    from types import SimpleNamespace

    from genrl.algorithms.base import RolloutBatch
    from genrl.algorithms.flow_grpo import FlowGRPO
    from genrl.config import load_config

    algo = FlowGRPO(load_config(None, ["train.per_reward_advantages=true", "sample.global_std=false"]))
    algo.setup(SimpleNamespace(reward_fn=SimpleNamespace(weights={"q": 1.0, "s": 2.0})))
    batch = RolloutBatch.__new__(RolloutBatch)
    batch.rewards = torch.zeros(4)
    batch.extras = {"reward_components": {"s": torch.tensor([0.0, 1.0, 0.0, 1.0]),
                                          "q": torch.tensor([1.0, 2.0, 3.0, 4.0])}}
    components = algo.advantage_inputs([batch])
    assert torch.equal(components, torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]]))
    out = algo.compute_advantages(batch.rewards, ["a", "a", "b", "b"], extra=components)
    # per group of two: q gives -1, +1 and s gives -1, +1 (weight 2): sums -3, +3
    np.testing.assert_allclose(out.advantages.numpy(), [-3, 3, -3, 3], atol=1e-3)
