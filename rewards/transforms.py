"""Reward transforms against per-prompt reference rewards: LSC (Wang et al., 2024) and PAR (Fu et al., 2025).

Both need, for each prompt, reward scores of samples from the *base* (reference) policy; a
:class:`ReferenceRewards` cache holds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Reward, RewardOutput

#: Standard-normal quantile at 0.85, PAR's re-implementation of LSC's reference point.
Z_085 = 1.0364333894937898


class ReferenceRewards:
    """Per-prompt reward scores of base-policy samples."""

    def __init__(self) -> None:
        self._scores: dict[str, torch.Tensor] = {}

    def add(self, prompt: str, scores: torch.Tensor | list[float]) -> None:
        """Append reference scores for a prompt."""
        new = torch.as_tensor(scores, dtype=torch.float32).flatten()
        if not torch.isfinite(new).all():
            raise ValueError(f"non-finite reference rewards for prompt {prompt!r}")
        old = self._scores.get(prompt)
        self._scores[prompt] = new if old is None else torch.cat([old, new])

    def get(self, prompt: str, max_refs: int | None = None) -> torch.Tensor:
        """The reference scores of a prompt (the first ``max_refs``)."""
        if prompt not in self._scores:
            raise KeyError(f"no reference rewards for prompt {prompt!r}; score base-policy samples of it first")
        return self._scores[prompt][:max_refs]

    def lsc_reference(self, prompt: str, quantile_z: float = Z_085) -> float:
        """``mean + z * std`` of a Normal fitted to the prompt's reference scores (0.85 quantile by default)."""
        ref = self.get(prompt)
        return float(ref.mean() + quantile_z * (ref.std(correction=0) if ref.numel() > 1 else 0.0))


def lsc(reward: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Log-sigmoid-centred reward ``log sigmoid(r - r_ref)``; sum it over rewards for a logical AND."""
    return F.logsigmoid(reward - reference)


def par(reward: torch.Tensor, references: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """Preference-as-reward ``mean_m sigmoid(k (r - r_ref,m))``; ``references`` is ``(N, M)``."""
    return torch.sigmoid(k * (reward[:, None] - references)).mean(-1)


class LSCReward(Reward):
    """Wrap a reward with the LSC transform against per-prompt reference rewards."""

    def __init__(self, base: Reward, references: ReferenceRewards, quantile_z: float = Z_085) -> None:
        self.base, self.references, self.quantile_z = base, references, quantile_z
        self.required_metadata, self.differentiable = base.required_metadata, base.differentiable

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        raw = self.base(images, prompts, metadata).scores
        ref = torch.tensor([self.references.lsc_reference(p, self.quantile_z) for p in prompts], device=raw.device)
        return RewardOutput(lsc(raw, ref), {"raw": raw.detach(), "reference": ref})


class PARReward(Reward):
    """Wrap a reward with Preference-As-Reward shaping (defaults k = 1, M = 10 as the reference code)."""

    def __init__(self, base: Reward, references: ReferenceRewards, k: float = 1.0, max_refs: int = 10) -> None:
        self.base, self.references, self.k, self.max_refs = base, references, k, max_refs
        self.required_metadata, self.differentiable = base.required_metadata, base.differentiable

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        raw = self.base(images, prompts, metadata).scores
        refs = [self.references.get(p, self.max_refs) for p in prompts]
        if len({r.numel() for r in refs}) != 1:
            raise ValueError("PAR needs the same number of reference rewards for every prompt in a batch")
        return RewardOutput(par(raw, torch.stack(refs).to(raw.device), self.k), {"raw": raw.detach()})
