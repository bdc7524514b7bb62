"""Distributional rewards (DRAGON): Fréchet distances between embedding Gaussians and the Vendi score.

Three arities, as DRAGON uses them:

- **per sample against a reference distribution**: one generation's embeddings (its frames or chunks; a single
  embedding for an image) as a Gaussian against the reference set's statistics — per-song FAD, or the
  exemplar-set reward :class:`ExemplarFrechetReward`, reward ``-FD``;
- **set against a reference distribution**: dataset FAD of a whole set of generations
  (:func:`set_frechet_distance`);
- **set by itself**: the Vendi score, the diversity of a set (:func:`vendi_score`).

Statistics and the matrix square root are computed in float64 (scipy), as fadtk and frechet-audio-distance
do; those packages pin numpy < 2, so their formulas are re-implemented here and tested against an independent
computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

from .backbones import build_backbone
from .base import Reward, RewardOutput
from .references import ReferenceImages
from .registry import register_reward


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


@register_reward("exemplar_fd")
class ExemplarFrechetReward(Reward):
    """DRAGON's exemplar-set reward for images: ``-FD`` between each image's embedding and the Gaussian of a
    reference image set in the same encoder's space.

    One image is a point mass (covariance 0), so its distance is ``||e - mu||^2 + tr(Sigma)``: the reference
    set's spread is a constant, and the reward ranks images by their distance to the exemplars' mean. The
    encoder is a frozen token backbone's CLS feature (``backbone``: ``"toy"``, an open_clip or DINOv2 id, see
    :func:`rewards.backbones.build_backbone`); the references are the toy renderer's scenes of every prompt of
    ``reference_prompts`` (a toy split), or a folder of images (:class:`rewards.references.ReferenceImages`,
    its whole pool). The reference statistics are computed once and need more images than dimensions.
    """

    name = "exemplar_fd"

    def __init__(self, backbone: str = "toy", references: str = "toy", reference_prompts: str = "train",
                 per_prompt: int = 4, seed: int = 0, image_size: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.backbone = build_backbone(backbone).to(self.device).eval()
        pool = ReferenceImages(references, per_prompt=per_prompt, heldout=0, seed=seed, image_size=image_size)
        if references == "toy":
            from rewards.toyworld.prompts import split

            images = torch.cat([pool.all_for(s.prompt) for s in split(reference_prompts)])
        else:
            images = pool.all_for("")
        self.reference = gaussian_stats(self.embed(images.float() / 255.0), what=f"references {references!r}")

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """CLS features of ``(N, 3, H, W)`` images in [0, 1], in batches."""
        return torch.cat([self.backbone(chunk.to(self.device))[0] for chunk in images.split(64)]).double().cpu()

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        emb = self.embed(images)
        distances = [frechet_distance(gaussian_stats(e[None]), self.reference) for e in emb]
        return RewardOutput(-torch.tensor(distances, dtype=torch.float32))
