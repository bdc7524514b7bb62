"""Distributional rewards (DRAGON): Fréchet distances between embedding Gaussians and the Vendi score.

Three arities, as DRAGON uses them:

- **per sample against a reference distribution**: one generation's embeddings (its frames or chunks; a single
  embedding for an image) as a Gaussian against the reference set's statistics — per-song FAD, or the
  exemplar-set reward :class:`rewards.set_rewards.ExemplarFrechetReward`, reward ``-FD``;
- **set against a reference distribution**: dataset FAD of a whole set of generations
  (:func:`set_frechet_distance`);
- **set by itself**: the Vendi score, the diversity of a set (:func:`vendi_score`).

The rewards a config builds from these (``exemplar_fd``, ``per_song_fd``, ``dataset_fd``, ``vendi``) are in
:mod:`rewards.set_rewards`.

Statistics and the matrix square root are computed in float64 (scipy), as fadtk and frechet-audio-distance
do; those packages pin numpy < 2, so their formulas are re-implemented here and tested against an independent
computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg


@dataclass(frozen=True)
class GaussianStats:
    """Mean ``(d,)`` and covariance ``(d, d)`` (float64) of a set of embeddings."""

    mu: np.ndarray
    sigma: np.ndarray

    @property
    def dim(self) -> int:
        return self.mu.shape[0]


def _as_float64(embeddings: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    x = embeddings.detach().cpu().double().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(
        embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty (n, d) array of embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: the embeddings contain NaN or inf (silent or broken media?)")
    return x


def gaussian_stats(embeddings: torch.Tensor | np.ndarray, ridge: float = 0.0, what: str = "embeddings") -> GaussianStats:
    """Mean and covariance (``ddof=1``, as ``np.cov``) of ``(n, d)`` embeddings, plus ``ridge * I``.

    A covariance from fewer embeddings than dimensions is singular; with ``ridge = 0`` that is an error naming
    the counts (per-song FAD of a short clip: pass a ridge, or use a lower-dimensional encoder). A single
    embedding has covariance 0 (a point mass), which is what an image's exemplar-set distance uses.
    """
    x = _as_float64(embeddings, what)
    n, d = x.shape
    sigma = np.cov(x, rowvar=False).reshape(d, d) if n > 1 else np.zeros((d, d))
    if 1 < n <= d and ridge <= 0:
        raise ValueError(f"{what}: {n} embeddings of dimension {d} give a singular covariance; use at least "
                         f"{d + 1} frames or chunks, a lower-dimensional encoder, or a ridge > 0")
    return GaussianStats(x.mean(axis=0), sigma + ridge * np.eye(d))


def frechet_distance(a: GaussianStats, b: GaussianStats, eps: float = 1e-6) -> float:
    """``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` in float64 (the FID/FAD formula).

    When the product's square root is not finite (near-singular covariances), ``eps * I`` is added to both, as
    the reference implementations do; the imaginary part from rounding is dropped and a rounding-negative
    result is returned as 0.
    """
    if a.dim != b.dim:
        raise ValueError(f"Fréchet distance between statistics of dimension {a.dim} and {b.dim}")
    diff = a.mu - b.mu
    covmean = linalg.sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():
        offset = np.eye(a.dim) * eps
        covmean = linalg.sqrtm((a.sigma + offset) @ (b.sigma + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def set_frechet_distance(embeddings: torch.Tensor | np.ndarray, reference: GaussianStats) -> float:
    """Dataset FAD: the Fréchet distance of a whole set of generations' embeddings to the reference statistics."""
    return frechet_distance(gaussian_stats(embeddings, what="generated set"), reference)


def vendi_score(embeddings: torch.Tensor | np.ndarray) -> float:
    """``exp(-sum_i l_i log l_i)`` over the eigenvalues of ``K / n``, ``K`` the cosine-similarity kernel of the
    ``n`` embeddings: 1 for identical embeddings, ``n`` for mutually orthogonal ones."""
    x = _as_float64(embeddings, "Vendi embeddings")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("Vendi embeddings: a zero embedding has no cosine similarity")
    x = x / norms
    eig = np.clip(np.linalg.eigvalsh(x @ x.T / x.shape[0]), 0.0, None)
    eig = eig[eig > 0]
    return float(np.exp(-(eig * np.log(eig)).sum()))
