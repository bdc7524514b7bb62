"""The fixed RL splits of the toy edit world: seeded triples, stratified by edit family.

Like the image world, the splits are held out from RL, not from pretraining: the base edit pipeline is
pretrained on freshly sampled edits of every family (any scene, any instruction), and ``test`` holds
edits of scenes RL never trains on.
"""

from __future__ import annotations

import random
from functools import cache

from .world import EDIT_FAMILIES, EditSpec, sample_edit

#: Triples per family in each split.
SPLIT_SIZES: dict[str, int] = {"train": 128, "test": 12}
SPLIT_SEED = 20261206


@cache
def edit_split(name: str) -> tuple[EditSpec, ...]:
    """The edits of the ``"train"`` or ``"test"`` split (family by family, a fixed seed per split)."""
    if name not in SPLIT_SIZES:
        raise ValueError(f"unknown toy edit split {name!r}; expected one of {tuple(SPLIT_SIZES)}")
    rng = random.Random(f"{SPLIT_SEED}-{name}")
    return tuple(sample_edit(family, rng) for family in EDIT_FAMILIES for _ in range(SPLIT_SIZES[name]))


def sample_edits(n: int, rng: random.Random, family_weights: dict[str, float] | None = None) -> list[EditSpec]:
    """``n`` fresh edits, families uniform or in proportion to ``family_weights`` (a family left out weighs 1)."""
    weights = [float((family_weights or {}).get(f, 1.0)) for f in EDIT_FAMILIES]
    return [sample_edit(rng.choices(EDIT_FAMILIES, weights)[0], rng) for _ in range(n)]
