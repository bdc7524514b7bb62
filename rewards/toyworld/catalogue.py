"""The prompt catalogue of a toy world built from specs: its fixed RL splits, every prompt it can express (what
its base pipeline is pretrained on), and a prompt's spec from its text."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from functools import cached_property
from typing import Any


def held_out_split(families: dict[str, list], attributes: Callable[[Any], set], rng: random.Random,
                   test_size: Callable[[str, int], int], in_both: Sequence[str] = ()) -> dict[str, tuple]:
    """``{"train": ..., "test": ...}``: per family, ``test_size(family, n)`` prompts drawn into ``test`` until every
    attribute they name (``attributes(spec)``) is also named in ``train``; the families of ``in_both`` are in both."""
    splits: dict[str, list] = {"train": [], "test": []}
    for family, specs in families.items():
        if family in in_both:
            splits["train"] += specs
            splits["test"] += specs
            continue
        n_test = test_size(family, len(specs))
        while True:  # redraw until RL trains on everything the test prompts name
            test = set(rng.sample(range(len(specs)), n_test))
            train = [s for i, s in enumerate(specs) if i not in test]
            seen = set().union(*map(attributes, train))
            if all(attributes(specs[i]) <= seen for i in test):
                break
        splits["test"] += [specs[i] for i in sorted(test)]
        splits["train"] += train
    return {name: tuple(v) for name, v in splits.items()}


class PromptCatalogue:
    """A world's prompts: ``all_specs()`` by family and the splits ``make_splits()`` draws from them (each built
    once, on first use). ``world`` names the world in errors, ``listing`` where its prompts are listed."""

    def __init__(self, world: str, all_specs: Callable[[], dict[str, list]],
                 make_splits: Callable[[], dict[str, tuple]], listing: str) -> None:
        self.world, self.listing = world, listing
        self._all_specs, self._make_splits = all_specs, make_splits

    @cached_property
    def splits(self) -> dict[str, tuple]:
        return self._make_splits()

    @cached_property
    def _by_prompt(self) -> dict[str, Hashable]:
        return {s.prompt: s for s in self.pretraining_specs()}

    def split(self, name: str) -> tuple:
        """The prompts of split ``name`` (``"train"`` or ``"test"``)."""
        if name not in self.splits:
            raise ValueError(f"unknown {self.world} split {name!r}; expected one of {tuple(self.splits)}")
        return self.splits[name]

    def pretraining_specs(self) -> tuple:
        """Every prompt of the world: what the base pipeline is pretrained on."""
        return tuple(s for specs in self._all_specs().values() for s in specs)

    def spec_from_prompt(self, prompt: str):
        """The spec of a prompt given as text (``KeyError`` naming the prompt if it is not one of the world's)."""
        try:
            return self._by_prompt[prompt.strip().lower()]
        except KeyError:
            raise KeyError(f"{prompt!r} is not a {self.world} prompt (see {self.listing})") from None
