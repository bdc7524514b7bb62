"""The distributed k-repeat prompt sampler: every group of k samples of one prompt lands in one iteration."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator, Sequence

import torch

from genrl.config import group_layout_problem


class KRepeatSampler:
    """Yields, for each sampling iteration, the dataset indices this process must generate.

    Each iteration picks ``m = num_replicas * batch_size / k`` prompts with a permutation seeded
    by ``seed + iteration``, repeats each ``k`` times, shuffles the ``m * k`` slots and gives
    rank ``r`` the slice ``[r * batch_size, (r + 1) * batch_size)``. A group can therefore span
    processes, and every process computes the same global layout without communication.
    The position is part of :meth:`state_dict`, so a resumed run draws the same prompts.

    ``weights`` (one per prompt, e.g. from :func:`family_weights`) make the ``m`` prompts a weighted
    draw without replacement instead of a uniform one.
    """

    def __init__(self, dataset_size: int, batch_size: int, k: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 42, weights: Sequence[float] | None = None) -> None:
        problem = group_layout_problem(batch_size, k, num_replicas, dataset_size)  # the rule a config is checked by
        if problem:
            raise ValueError(problem)
        total = num_replicas * batch_size
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} processes")
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64)
            if weights.shape != (dataset_size,) or not torch.isfinite(weights).all() or (weights < 0).any():
                raise ValueError(f"prompt weights must be {dataset_size} finite non-negative numbers")
            if int((weights > 0).sum()) < total // k:
                raise ValueError(f"need {total // k} distinct prompts per iteration but only "
                                 f"{int((weights > 0).sum())} have a positive weight")
        self.weights = weights
        self.dataset_size, self.batch_size, self.k = dataset_size, batch_size, k
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.iteration = 0
        self.banned: set[int] = set()  # prompts no longer sampled (e.g. solved ones, DiffusionNFT's banning)

    @property
    def prompts_per_iteration(self) -> int:
        """How many distinct prompts one iteration draws."""
        return self.num_replicas * self.batch_size // self.k

    def _drawable_mask(self) -> torch.Tensor:
        allowed = torch.ones(self.dataset_size, dtype=torch.bool) if self.weights is None else self.weights > 0
        allowed[sorted(self.banned)] = False
        return allowed

    def drawable(self) -> int:
        """How many prompts can still be drawn (not banned, positive weight)."""
        return int(self._drawable_mask().sum())

    def exhausted(self) -> bool:
        """Whether banning has left fewer drawable prompts than one iteration needs."""
        return self.drawable() < self.prompts_per_iteration

    def global_layout(self, iteration: int) -> list[int]:
        """All ``num_replicas * batch_size`` indices of one iteration, in rank order (banned prompts skipped)."""
        g = torch.Generator().manual_seed(self.seed + iteration)
        m = self.prompts_per_iteration
        allowed = self._drawable_mask()
        if int(allowed.sum()) < m:
            raise RuntimeError(f"only {int(allowed.sum())} prompts are drawable (not banned, positive weight) "
                               f"but an iteration needs {m}")
        if self.weights is None:
            order = torch.randperm(self.dataset_size, generator=g)
            chosen = order[allowed[order]][:m]
        else:
            chosen = torch.multinomial(self.weights * allowed, m, replacement=False, generator=g)
        prompts = chosen.repeat_interleave(self.k)
        return prompts[torch.randperm(len(prompts), generator=g)].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            layout = self.global_layout(self.iteration)
            self.iteration += 1
            yield layout[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def state_dict(self) -> dict:
        """The position (and banned prompts) to restore on resume."""
        return {"iteration": self.iteration, "seed": self.seed, "banned": sorted(self.banned)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict`."""
        self.iteration, self.seed = int(state["iteration"]), int(state["seed"])
        self.banned = {int(i) for i in state.get("banned", [])}


def family_weights(families: Sequence[Hashable]) -> list[float]:
    """Per-prompt weights that give every family the same share: ``1 / (F * size of the prompt's family)``.

    GenEval scores the mean over its families, so a training split whose families differ in size
    (the toy world's has 92 colour-attribution prompts and 4 single-object ones) can be drawn this
    way to train each family as much as the score weighs it.
    """
    sizes = Counter(families)
    return [1.0 / (len(sizes) * sizes[f]) for f in families]
