"""The prompts of the toy video world and its fixed splits, built as the image and audio worlds' are.

The base pipeline is pretrained on every prompt; ``test`` holds out :data:`TEST_PER_FAMILY` prompts of each
family from RL only, drawn so that every colour, shape, direction, speed, count and relation they name is also
in ``train``.
"""

from __future__ import annotations

import itertools
import random

from rewards.toyworld.catalogue import PromptCatalogue, held_out_split
from rewards.toyworld.world import COLORS, SHAPES

from .world import DIRECTIONS, NUMBER_WORDS, RELATIONS, SPEEDS, MoverSpec, VideoSpec

SPLIT_SEED = 20261206
TEST_PER_FAMILY = 8


def all_specs() -> dict[str, list[VideoSpec]]:
    """Every prompt the world can express, by family, in a fixed order."""
    movers = [MoverSpec(s, c) for s in SHAPES for c in COLORS]
    pairs = [(MoverSpec(s1, c1), MoverSpec(s2, c2)) for s1, s2 in itertools.combinations(SHAPES, 2)
             for c1, c2 in itertools.permutations(COLORS, 2)]
    return {
        "direction": [VideoSpec("direction", (m,), direction=d) for d in DIRECTIONS for m in movers],
        "speed": [VideoSpec("speed", (m,), direction=d, speed=v) for v in SPEEDS for d in DIRECTIONS for m in movers],
        "still": [VideoSpec("still", (m,)) for m in movers],
        "apart": [VideoSpec("apart", pair, relation=r) for r in RELATIONS for pair in pairs],
        "counting": [VideoSpec("counting", (MoverSpec(m.shape, m.color, n),), direction=d)
                     for n in NUMBER_WORDS for d in DIRECTIONS for m in movers],
    }


def _attributes(spec: VideoSpec) -> set[tuple[str, object]]:
    named = {("direction", spec.direction), ("speed", spec.speed), ("relation", spec.relation)}
    for o in spec.objects:
        named |= {("shape", o.shape), ("color", o.color), ("count", o.count)}
    return named


def _splits() -> dict[str, tuple[VideoSpec, ...]]:
    return held_out_split(all_specs(), _attributes, random.Random(SPLIT_SEED), lambda family, n: TEST_PER_FAMILY)


_CATALOGUE = PromptCatalogue("toy video", all_specs, _splits, "rewards.toyvideo.prompts.all_specs()")
SPLITS: tuple[str, ...] = ("train", "test")
split = _CATALOGUE.split
pretraining_specs = _CATALOGUE.pretraining_specs
spec_from_prompt = _CATALOGUE.spec_from_prompt
