"""Reward transforms against per-prompt reference rewards: LSC (Wang et al., 2024) and PAR (Fu et al., 2025).

Both need, for each prompt, reward scores of samples from the *base* (reference) policy; a
:class:`ReferenceRewards` cache holds them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .base import Reward, RewardOutput, check_media_for_all
from .media import Media
from .registry import build_reward_spec, register_reward

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

    def __len__(self) -> int:
        return len(self._scores)

    def as_json(self) -> str:
        """``{prompt: [scores]}`` as JSON text, what :meth:`load` reads from a file."""
        return json.dumps({p: s.tolist() for p, s in self._scores.items()}, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReferenceRewards:
        """Read a file of :meth:`as_json` (``scripts/reference_rewards.py`` makes one from a base pipeline)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference rewards file {str(path)!r} does not exist; make it with "
                                    "scripts/reference_rewards.py")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"reference rewards file {str(path)!r} is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"reference rewards file {str(path)!r} must map prompts to lists of scores")  # noqa: TRY004 (bad file content, not a bad argument type)
        refs = cls()
        for prompt, scores in data.items():
            refs.add(prompt, scores)
        return refs

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


def _base_and_references(base: Reward | Mapping[str, Any], references: ReferenceRewards | str | os.PathLike,
                         owner: str) -> tuple[Reward, ReferenceRewards]:
    """A transform's base reward (or ``{name, options}``) and its references (or a file of them)."""
    base = build_reward_spec(base, f"{owner}: base")
    if not isinstance(references, ReferenceRewards):
        references = ReferenceRewards.load(references)
    return base, references


@register_reward("lsc")
class LSCReward(Reward):
    """Wrap a reward with the LSC transform against per-prompt reference rewards. From a config:
    ``{name: lsc, options: {base: {name: pickscore}, references: refs.json}}``."""

    def __init__(self, base: Reward | Mapping[str, Any], references: ReferenceRewards | str | os.PathLike,
                 quantile_z: float = Z_085) -> None:
        base, references = _base_and_references(base, references, "lsc")
        self.base, self.references, self.quantile_z = base, references, quantile_z
        self.required_metadata, self.differentiable = base.required_metadata, base.differentiable
        self.modality = base.modality

    def media_tensor(self, media: Media) -> torch.Tensor:
        return check_media_for_all([self.base], media)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        raw = self.base(images, prompts, metadata).scores
        ref = torch.tensor([self.references.lsc_reference(p, self.quantile_z) for p in prompts], device=raw.device)
        return RewardOutput(lsc(raw, ref), {"raw": raw.detach(), "reference": ref})


@register_reward("par")
class PARReward(Reward):
    """Wrap a reward with Preference-As-Reward shaping (defaults k = 1, M = 10 as the reference code). From a
    config: ``{name: par, options: {base: {name: pickscore}, references: refs.json, k: 1.0}}``."""

    def __init__(self, base: Reward | Mapping[str, Any], references: ReferenceRewards | str | os.PathLike,
                 k: float = 1.0, max_refs: int = 10) -> None:
        base, references = _base_and_references(base, references, "par")
        self.base, self.references, self.k, self.max_refs = base, references, k, max_refs
        self.required_metadata, self.differentiable = base.required_metadata, base.differentiable
        self.modality = base.modality

    def media_tensor(self, media: Media) -> torch.Tensor:
        return check_media_for_all([self.base], media)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        raw = self.base(images, prompts, metadata).scores
        refs = [self.references.get(p, self.max_refs) for p in prompts]
        if len({r.numel() for r in refs}) != 1:
            raise ValueError("PAR needs the same number of reference rewards for every prompt in a batch")
        return RewardOutput(par(raw, torch.stack(refs).to(raw.device), self.k), {"raw": raw.detach()})
