"""Distributional rewards: the Fréchet distance against closed forms and its invariants, the per-song covariance's
guard, and the Vendi score's bounds."""

import numpy as np
import pytest
import torch

from rewards.distributional import (
    GaussianStats,
    frechet_distance,
    gaussian_stats,
    set_frechet_distance,
    vendi_score,
)


def _random_stats(d: int, seed: int) -> GaussianStats:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return GaussianStats(rng.normal(size=d), a @ a.T + 0.1 * np.eye(d))


def test_frechet_distance_matches_closed_forms():
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    one = frechet_distance(GaussianStats(np.array([1.0]), np.array([[4.0]])), GaussianStats(np.array([-2.0]), np.array([[9.0]])))
    assert one == pytest.approx(3.0**2 + (2.0 - 3.0) ** 2)
    # commuting (diagonal) covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    got = frechet_distance(GaussianStats(mu1, np.diag(a)), GaussianStats(mu2, np.diag(b)))
    assert got == pytest.approx(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())


def test_frechet_distance_invariants_against_an_eigen_computation():
    p, q = _random_stats(6, 0), _random_stats(6, 1)
    assert frechet_distance(p, p) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(p, q) == pytest.approx(frechet_distance(q, p), rel=1e-8)
    assert frechet_distance(p, q) > 0
    # independent: tr((S1 S2)^(1/2)) = sum of sqrt of the eigenvalues of S1^(1/2) S2 S1^(1/2)
    w, v = np.linalg.eigh(p.sigma)
    root = v @ np.diag(np.sqrt(w)) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ q.sigma @ root), 0, None)).sum()
    expected = ((p.mu - q.mu) ** 2).sum() + np.trace(p.sigma) + np.trace(q.sigma) - 2 * cross
    assert frechet_distance(p, q) == pytest.approx(expected, rel=1e-8)


def test_statistics_follow_np_cov_and_ignore_frame_order():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    stats = gaussian_stats(x)
    np.testing.assert_allclose(stats.sigma, np.cov(x.double().numpy(), rowvar=False))
    reference = gaussian_stats(torch.randn(200, 4, generator=torch.Generator().manual_seed(1)) + 0.5)
    shuffled = x[torch.randperm(50, generator=torch.Generator().manual_seed(2))]
    assert set_frechet_distance(shuffled, reference) == pytest.approx(set_frechet_distance(x, reference), rel=1e-10)
    assert set_frechet_distance(x + 0.5, reference) < set_frechet_distance(x - 0.5, reference)  # nearer, smaller


def test_too_few_frames_nan_and_empty_sets_are_clear_errors():
    with pytest.raises(ValueError, match="3 embeddings of dimension 8 give a singular covariance.*ridge"):
        gaussian_stats(torch.randn(3, 8))
    assert gaussian_stats(torch.randn(3, 8), ridge=1e-3).sigma.shape == (8, 8)  # the documented regularisation
    with pytest.raises(ValueError, match="NaN or inf"):
        gaussian_stats(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="non-empty"):
        gaussian_stats(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="dimension 3 and 4"):
        frechet_distance(_random_stats(3, 0), _random_stats(4, 0))


def test_vendi_score_bounds():
    n = 5
    assert vendi_score(torch.ones(n, 3)) == pytest.approx(1.0)
    assert vendi_score(torch.eye(n)) == pytest.approx(n)
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))
    assert 1.0 <= vendi_score(x) <= n
    assert vendi_score(torch.cat([x[:2], x[:2]])) == pytest.approx(vendi_score(x[:2]), rel=1e-6)  # duplicates add nothing
    with pytest.raises(ValueError, match="zero embedding"):
        vendi_score(torch.zeros(2, 3))


def test_the_exemplar_reward_prefers_scenes_like_its_references():
    from rewards import build_reward
    from rewards.references import ReferenceImages
    from rewards.toyworld.prompts import split

    reward = build_reward("exemplar_fd", backbone="toy", references="toy", reference_prompts="train", per_prompt=2)
    assert reward.reference.dim == 96  # the toy CLIP's CLS width, from 240 renderer scenes
    prompts = [s.prompt for s in split("test")[:4]]
    scenes = torch.cat([ReferenceImages("toy", per_prompt=1, heldout=0, seed=7).all_for(p) for p in prompts]) / 255.0
    flat = torch.stack([torch.full((3, 32, 32), v) for v in (1.0, 0.8, 0.5, 0.0)])  # empty canvases of one tone
    on, off = reward(scenes, prompts).scores, reward(flat, prompts).scores
    assert (on > off).all() and (on <= 0).all()
    # the score is -(|e - mu|^2 + tr(Sigma)), computed independently from the embeddings
    e = reward.embed(scenes).numpy()
    expected = -(((e - reward.reference.mu) ** 2).sum(1) + np.trace(reward.reference.sigma))
    np.testing.assert_allclose(on.numpy(), expected, rtol=1e-5)
