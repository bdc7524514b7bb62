"""The prompts of the toy audio world and its fixed splits, built as the image world's are.

The base pipeline is pretrained on every prompt; ``test`` holds out a stratified third of each family's prompts
from RL only (every timbre, register, count and contour it names is also in ``train``); the four single-note
prompts are in both.
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache

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


@lru_cache(maxsize=1)
def _splits() -> dict[str, tuple[AudioSpec, ...]]:
    rng = random.Random(SPLIT_SEED)
    splits: dict[str, list[AudioSpec]] = {name: [] for name in SPLITS}
    for family, specs in all_specs().items():
        if family == "single_note":
            for name in SPLITS:
                splits[name] += specs
            continue
        n_test = max(1, round(TEST_FRACTION * len(specs)))
        while True:  # redraw until RL trains on everything the test prompts name
            test = set(rng.sample(range(len(specs)), n_test))
            train = [s for i, s in enumerate(specs) if i not in test]
            seen = set().union(*map(_attributes, train))
            if all(_attributes(s) <= seen for i, s in enumerate(specs) if i in test):
                break
        splits["test"] += [s for i, s in enumerate(specs) if i in test]
        splits["train"] += train
    return {name: tuple(v) for name, v in splits.items()}


def split(name: str) -> tuple[AudioSpec, ...]:
    """The prompts of the ``"train"`` or ``"test"`` split."""
    if name not in SPLITS:
        raise ValueError(f"unknown toy audio split {name!r}; expected one of {SPLITS}")
    return _splits()[name]


def pretraining_specs() -> tuple[AudioSpec, ...]:
    """Every prompt of the world: what the base pipeline is pretrained on."""
    return tuple(s for specs in all_specs().values() for s in specs)


@lru_cache(maxsize=1)
def _by_prompt() -> dict[str, AudioSpec]:
    return {s.prompt: s for s in pretraining_specs()}


def spec_from_prompt(prompt: str) -> AudioSpec:
    """The spec of a toy audio prompt given as text (``KeyError`` naming the prompt if it is not one)."""
    try:
        return _by_prompt()[prompt.strip().lower()]
    except KeyError:
        raise KeyError(f"{prompt!r} is not a toy audio prompt (see rewards.toyaudio.prompts.all_specs())") from None
