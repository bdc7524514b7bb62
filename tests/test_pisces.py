"""PISCES's OT pieces against the specification's invariants and POT's unbalanced Sinkhorn."""

import math

import numpy as np
import pytest
import torch

from rewards.pisces import (
    OTMap,
    OTPotential,
    check_single_video,
    distance_spearman,
    fuse_attention,
    mutual_knn,
    ot_map_round,
    quality_reward,
    sinkhorn_exponent,
    token_cost,
    unbalanced_sinkhorn,
    video_token_geometry,
)


def _tokens(n=6, frames=2, grid=4, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    t, s = video_token_geometry(frames, grid)
    m = t.numel()
    logits = torch.randn(n, m, generator=g, requires_grad=True)
    return torch.randn(n, dim, generator=g), torch.randn(m, dim, generator=g), logits, t, s


def test_the_sinkhorn_exponent_is_the_mass_and_one_when_balanced():
    for m in (0.5, 0.9, 0.99):
        assert sinkhorn_exponent(0.05, m) == pytest.approx(m, abs=1e-12)
        assert sinkhorn_exponent(0.3, m) == pytest.approx(m, abs=1e-12)  # independent of eps
    assert sinkhorn_exponent(0.05, 1.0) == 1.0


def test_balanced_sinkhorn_meets_both_marginals():
    cost = torch.rand(5, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plan = unbalanced_sinkhorn(cost, 0.05, mass=1.0, iterations=5000, tolerance=1e-12, normalize_rows=False)
    torch.testing.assert_close(plan.sum(1), torch.full((5,), 1 / 5, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((9,), 1 / 9, dtype=torch.float64), atol=1e-9, rtol=0)


def test_the_unbalanced_plan_is_pots_entropic_one():
    ot = pytest.importorskip("ot")
    cost = torch.rand(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps, m = 0.05, 0.9
    ours = unbalanced_sinkhorn(cost, eps, m, iterations=5000, tolerance=1e-14, normalize_rows=False)
    # POT: min <P, C> + eps H-term + rho (KL(P1 | a) + KL(P^T 1 | b)), rho = eps m / (1 - m): the same scalings
    with pytest.warns(UserWarning):
        theirs = ot.unbalanced.sinkhorn_unbalanced(np.full(5, 0.2), np.full(7, 1 / 7), cost.numpy(), eps,
                                                   eps * m / (1 - m), reg_type="entropy", method="sinkhorn",
                                                   numItermax=100000, stopThr=1e-14)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-12)
    assert abs(float(ours.sum()) - 1.0) > 1e-3  # the mass is relaxed, not forced


def test_cost_and_plan_are_bounded_finite_and_the_plan_has_no_gradient():
    q, k, logits, t, s = _tokens()
    attention = torch.softmax(logits.detach(), -1)
    cost = token_cost(q, k, attention, t, s, num_frames=2)
    assert float(cost.min()) == 0.0 and float(cost.max()) == 1.0
    plan = unbalanced_sinkhorn(cost)
    assert torch.isfinite(plan).all() and (plan >= 0).all() and not plan.requires_grad
    torch.testing.assert_close(plan.sum(-1), torch.ones(6))
    nan_cost = token_cost(q, k, attention, t, s, num_frames=2)
    nan_cost[0, 0] = float("nan")
    assert torch.isfinite(unbalanced_sinkhorn(torch.nan_to_num(nan_cost, nan=1.0))).all()


def test_cost_terms_against_an_independent_computation():
    q, k, logits, t, s = _tokens(n=3, frames=3, grid=2)
    a = torch.softmax(logits.detach(), -1)
    got = token_cost(q, k, a, t, s, num_frames=3)
    raw = torch.empty(3, t.numel())
    for i in range(3):
        tau, pi = float((a[i] * t).sum()), (a[i][:, None] * s).sum(0)
        for j in range(t.numel()):
            cos = float(torch.dot(q[i], k[j]) / (q[i].norm() * k[j].norm()))
            raw[i, j] = min(max(1 - cos, 0), 2) + 0.2 * abs(tau - float(t[j])) / 3 + \
                0.2 * float((pi - s[j]).norm()) / math.sqrt(2)
    torch.testing.assert_close(got, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-5, rtol=1e-5)


def test_fusion_touches_only_lexical_rows_sums_to_one_and_a_uniform_plan_changes_nothing():
    q, k, logits, t, s = _tokens()
    attention = torch.softmax(logits, -1)
    plan = unbalanced_sinkhorn(token_cost(q, k, attention.detach(), t, s, num_frames=2))
    rows = torch.tensor([1, 2, 4])
    fused = fuse_attention(attention, plan, rows)
    torch.testing.assert_close(fused.sum(-1), torch.ones(6))
    assert torch.equal(fused[[0, 3, 5]], attention[[0, 3, 5]])  # bit-identical outside the lexical rows
    assert not torch.allclose(fused[rows], attention[rows])
    uniform = torch.full_like(plan, 1 / plan.shape[-1])
    torch.testing.assert_close(fuse_attention(attention, uniform, rows), attention)
    weights = torch.rand(fused[rows].shape, generator=torch.Generator().manual_seed(5))
    (fused[rows] * weights).sum().backward()  # gradients reach the attention logits, the plan has none
    assert logits.grad is not None and logits.grad.abs().sum() > 0 and plan.grad is None


def test_token_geometry():
    t, s = video_token_geometry(3, grid=16)
    assert t.shape == (1 + 3 * 256,) and s.shape == (1 + 3 * 256, 2)
    assert float(t[0]) == -1 and s[0].tolist() == [-1.0, -1.0]
    assert t[1:257].eq(0).all() and t[-256:].eq(2).all()
    assert s[1:].min() == 0 and s[1:].max() == 1 and s[1].tolist() == [0.0, 0.0] and s[16].tolist() == [1.0, 0.0]


def test_the_map_keeps_the_released_sizes_and_rewards_are_bounded():
    T, f = OTMap(), OTPotential()
    x = torch.randn(4, 512)
    assert T(x).shape == (4, 512) and f(x).shape == (4, 1)
    video = torch.randn(4, 512, requires_grad=True)
    text = torch.randn(4, 512, requires_grad=True)
    r_q = quality_reward(video, text, T)
    assert r_q.shape == (4,) and (r_q.abs() <= 1 + 1e-6).all()
    r_q.sum().backward()  # only the video gets a gradient
    assert video.grad is not None and text.grad is None and all(p.grad is None for p in T.parameters())
    with pytest.raises(ValueError, match="one video at a time; got a batch of 2"):
        check_single_video(2)


def test_min_max_training_moves_the_map_toward_the_video_distribution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = torch.randn(256, 8, generator=g) * 0.5 + 3.0  # the "video" distribution: shifted and narrower
    T, f = OTMap(8, 32), OTPotential(8, 32)
    opt_T, opt_f = torch.optim.Adam(T.parameters(), 1e-3), torch.optim.Adam(f.parameters(), 1e-3)
    with torch.no_grad():
        start = float((T(x).mean(0) - y.mean(0)).norm())
    for _ in range(150):
        ot_map_round(T, f, opt_T, opt_f, [x[i::10] for i in range(10)], y, mse_weight=0.1)
    with torch.no_grad():
        tx = T(x)
    assert float((tx.mean(0) - y.mean(0)).norm()) < 0.5 * start
    assert 0 <= mutual_knn(x, tx, k=10) <= 1 and -1 <= distance_spearman(x, tx) <= 1
    assert mutual_knn(x, x, k=10) == 1.0 and distance_spearman(x, 2 * x) == pytest.approx(1.0)
