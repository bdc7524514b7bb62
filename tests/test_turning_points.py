"""TP-GRPO's step-reward rules against the spec's invariants (reference/tp-grpo.md §3, §10)."""

import torch

from genrl.algorithms.turning_points import (
    aggregated_rewards,
    balance_turning_points,
    incremental_rewards,
    step_rewards,
    turning_points,
)


def _random_R(b=64, w=6, seed=0):
    return torch.randn(b, w + 1, generator=torch.Generator().manual_seed(seed)).round(decimals=1)


def test_increments_telescope_and_aggregates_are_suffix_sums():
    R = _random_R()
    d, G = incremental_rewards(R), aggregated_rewards(R)
    torch.testing.assert_close(d.sum(1), R[:, -1] - R[:, 0])
    torch.testing.assert_close(G, d.flip(1).cumsum(1).flip(1))


def test_turning_point_rules():
    R = _random_R(256)
    tp = turning_points(R)
    assert not tp[:, -1].any()  # the last step never is one
    delta = R[:, -1] - R[:, 0]
    G = aggregated_rewards(R)
    assert (torch.sign(G[tp]) == torch.sign(delta.unsqueeze(1).expand_as(G)[tp])).all()
    flat = delta == 0
    assert not tp[flat][:, 1:].any()  # zero trend: no k >= 2 turning points
    torch.testing.assert_close(turning_points(R + 3.0), tp)  # invariant to a constant shift


def test_hand_worked_trajectories():
    # dips then rises to the end: step 2 (index 1) turns the trend back up
    R = torch.tensor([[0.0, -1.0, 0.5, 1.0, 2.0]])
    assert turning_points(R).tolist() == [[False, True, False, False]]
    # monotone increase: only the initial point
    R = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert turning_points(R).tolist() == [[True, False, False]]
    # any monotone trajectory, up or down: no k >= 2 turning points
    steps = torch.rand(64, 6, generator=torch.Generator().manual_seed(1))
    monotone = torch.cat([torch.zeros(64, 1), steps.cumsum(1)], 1)
    assert not turning_points(monotone)[:, 1:].any() and not turning_points(-monotone)[:, 1:].any()


def test_balancing_keeps_equal_counts_with_the_largest_aggregates():
    R = torch.tensor([[0.0, 1.0, 2.0, 3.0],     # up trend, TP at step 1, G = 3
                      [0.0, 0.5, 1.0, 1.5],     # up trend, TP at step 1, G = 1.5
                      [0.0, -1.0, -2.0, -2.5]])  # down trend, TP at step 1, G = -2.5
    tp = turning_points(R)
    assert tp[:, 0].tolist() == [True, True, True]
    kept = balance_turning_points(tp, R)
    assert kept[:, 0].tolist() == [True, False, True]
    only_up = R[:2]
    assert torch.equal(balance_turning_points(turning_points(only_up), only_up), turning_points(only_up))
    rewards, _ = step_rewards(R)
    assert rewards[0, 0] == 3.0 and rewards[1, 0] == 0.5 and rewards[2, 0] == -2.5  # G at kept TPs, d elsewhere
    big = _random_R(512, seed=3)
    kept = balance_turning_points(turning_points(big), big)
    delta = (big[:, -1] - big[:, 0]).unsqueeze(1).expand_as(kept)
    assert int((kept & (delta > 0)).sum()) == int((kept & (delta < 0)).sum()) > 0


def test_tp_grpo_on_the_trainer(tmp_path):
    from test_trainer import CONFIGS, tiny_overrides

    from genrl.config import load_config
    from genrl.sampling.rollout import rollout
    from genrl.trainer import Trainer

    overrides = tiny_overrides(tmp_path, **{"sample.window_size": 3, "sample.group_size": 4,
                                            "reward.weights": "{brightness: 1.0}", "reward.options": "{}",
                                            "reward.eval": "{bright: {name: brightness}}"})
    trainer = Trainer(load_config(CONFIGS / "toy_tp.yaml", overrides))
    scored = []  # batch sizes the reward function sees

    class CountingReward:
        def __init__(self, inner):
            self.inner, self.components = inner, inner.components

        def __call__(self, images, *args):
            scored.append(len(images))
            return self.inner(images, *args)

    trainer.rewards.reward_fn = CountingReward(trainer.reward_fn)
    indices = next(iter(trainer.sampler))
    batch = trainer.rollouts.sample_batch(0, 0, indices)
    # completions are batched, one reward call per window step; then the batch itself, right after decoding
    assert scored == [4, 4, 4, 4]
    assert batch.trajectory.steps == [0, 1, 2] and batch.extras["partial_rewards"].shape == (4, 3)
    # R_0 is the pure ODE sample from the rollout's own initial noise (not fresh noise)
    adapter = trainer.adapter
    x_T = adapter.initial_noise(trainer.rollouts.generators(*[(trainer.cfg.seed, "init", 0, 0, 0, b) for b in range(4)]))
    assert torch.equal(x_T, batch.trajectory.states[:, 0])
    with torch.no_grad():
        ode = rollout(lambda z, s: adapter.velocity(z, s, batch.cond), x_T, batch.sigmas, window=(0, 0))
        r0 = trainer.reward_fn(adapter.decode(ode.final).float(), batch.prompts, batch.metadata).scores
    torch.testing.assert_close(batch.extras["partial_rewards"][:, 0], r0)
    partial, counts = batch.extras["partial_rewards"].clone(), dict(trainer.algorithm.counts)
    trainer.algorithm.after_sampling(trainer, batch)  # noise-free completions: deterministic
    assert torch.equal(batch.extras["partial_rewards"], partial)
    trainer.algorithm.counts = counts
    scored.clear()
    metrics = trainer.score_epoch([batch])
    assert scored == []  # R_W is the rollout image's reward, scored once (when sampled) and reused
    assert batch.advantages.shape == (4, 3)
    for k in range(3):  # one group of 4: per-step advantages have mean 0
        assert abs(batch.advantages[:, k].mean().item()) < 1e-5
    record = trainer.optimize_epoch([batch])
    assert record["train/first_ratio_max_dev"] == 0.0
    extra = trainer.algorithm.after_epoch(trainer)
    # completions from steps 1 and 2 of 4 (x^(0) completes over all 4): 4 + 3 + 2 velocity calls per trajectory
    assert extra["tp/extra_transformer_calls_per_trajectory"] == 9 and extra["tp/reward_calls_per_trajectory"] == 4
    assert metrics["kept_fraction"] > 0
