"""The prompts of the toy audio world and its fixed splits, built as the image world's are.

The base pipeline is pretrained on every prompt; ``test`` holds out a stratified third of each family's prompts
from RL only (every timbre, register, count and contour it names is also in ``train``); the four single-note
prompts are in both.
"""

from __future__ import annotations

import itertools
import random

from rewards.toyworld.catalogue import PromptCatalogue, held_out_split

from .world import CONTOURS, DRUM, PITCHED, REGISTERS, AudioSpec, EventSpec

SPLIT_SEED = 20261202
TEST_FRACTION = 1 / 3
SPLITS: tuple[str, ...] = ("train", "test")


def all_specs() -> dict[str, list[AudioSpec]]:
    """Every prompt the world can express, by family, in a fixed order."""
    notes = [EventSpec(t, r) for r in REGISTERS for t in PITCHED]
    kinds = [EventSpec(t) for t in PITCHED] + [EventSpec(DRUM)]
    return {
        "single_note": [AudioSpec("single_note", (e,)) for e in kinds],
        "register": [AudioSpec("register", (e,)) for e in notes],
        "counting": [AudioSpec("counting", (e,), count=n) for n in (2, 3, 4) for e in kinds],
        "melody": [AudioSpec("melody", (EventSpec(t),), count=n, contour=c)
                   for c in CONTOURS for n in (2, 3, 4) for t in PITCHED],
        "chord": [AudioSpec("chord", (EventSpec(t, r, chord=True),)) for r in REGISTERS for t in PITCHED],
        "sequence": [AudioSpec("sequence", (a, b)) for a, b in itertools.permutations(notes, 2)
                     if a.timbre != b.timbre]
                    + [AudioSpec("sequence", pair) for e in notes for pair in ((EventSpec(DRUM), e), (e, EventSpec(DRUM)))
                       if e.register == "middle"],
    }


def _attributes(spec: AudioSpec) -> set[tuple[str, object]]:
    named = {("count", spec.count), ("contour", spec.contour)}
    for e in spec.events:
        named |= {("timbre", e.timbre), ("register", e.register), ("chord", e.chord)}
    return named


def _splits() -> dict[str, tuple[AudioSpec, ...]]:
    return held_out_split(all_specs(), _attributes, random.Random(SPLIT_SEED),
                          lambda family, n: max(1, round(TEST_FRACTION * n)), in_both=("single_note",))


_CATALOGUE = PromptCatalogue("toy audio", all_specs, _splits, "rewards.toyaudio.prompts.all_specs()")
split = _CATALOGUE.split
pretraining_specs = _CATALOGUE.pretraining_specs
spec_from_prompt = _CATALOGUE.spec_from_prompt
