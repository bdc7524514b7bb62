"""The fixed prompt splits of the toy world.

The base pipeline is pretrained on *every* prompt of the world (as a web-scale model has seen
every object and attribute GenEval names); the splits below are held out from RL only:

* ``test``: the main held-out set, a fixed random sample of each family's prompts
  (:data:`TEST_FRACTION` of it, stratified by family); RL never trains on these prompts, but
  every shape, colour, count and relation they use also occurs in ``train``. The +20-point
  target of the toy world is measured here.
* ``test_ood``: a compositional set, prompts with a combination that ``train`` never shows:
  colour-shape pairs in :data:`HELD_OUT_COLOR_SHAPES` (one per colour), shape pairs in
  :data:`HELD_OUT_SHAPE_PAIRS` (in any order, in any two-object family) and counts in
  :data:`HELD_OUT_COUNTS`. It is reported beside ``test``.
* ``train``: the rest, the RL training prompts.

The four single-object prompts are the base skill every other family builds on; like
GenEval's single-object prompts, they appear in every split.
"""

from __future__ import annotations

import itertools
import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

from .world import COLORS, FAMILIES, RELATIONS, SHAPES, ObjectSpec, PromptSpec

HELD_OUT_COLOR_SHAPES: frozenset[tuple[str, str]] = frozenset(
    {("red", "cross"), ("yellow", "circle"), ("green", "square"), ("blue", "triangle"), ("purple", "circle")}
)
HELD_OUT_SHAPE_PAIRS: frozenset[frozenset[str]] = frozenset(
    {frozenset({"circle", "triangle"}), frozenset({"square", "cross"})}
)
HELD_OUT_COUNTS: frozenset[tuple[int, str]] = frozenset({(3, "triangle"), (2, "cross")})

#: How many prompts of a family ``test_ood`` keeps (drawn with a fixed seed).
TEST_PROMPTS_PER_FAMILY = 16
SPLIT_SEED = 20260301
#: Share of each family's in-distribution prompts that ``test`` holds out from RL training
#: (at least one prompt, at most :data:`TEST_PROMPTS_PER_FAMILY`).
TEST_FRACTION = 1 / 3
SPLITS: tuple[str, ...] = ("train", "test", "test_ood")


def all_specs() -> dict[str, list[PromptSpec]]:
    """Every prompt the world can express, by family, in a fixed order."""
    pairs = [(a, b) for a, b in itertools.permutations(SHAPES, 2)]
    colour_pairs = list(itertools.permutations(COLORS, 2))
    return {
        "single_object": [PromptSpec("single_object", (ObjectSpec(s),)) for s in SHAPES],
        "two_object": [PromptSpec("two_object", (ObjectSpec(a), ObjectSpec(b))) for a, b in pairs],
        "counting": [PromptSpec("counting", (ObjectSpec(s, n),)) for n in (2, 3) for s in SHAPES],
        "colors": [PromptSpec("colors", (ObjectSpec(s, 1, c),)) for c in COLORS for s in SHAPES],
        "position": [PromptSpec("position", (ObjectSpec(a), ObjectSpec(b)), relation=r)
                     for r in RELATIONS for a, b in pairs],
        "color_attr": [PromptSpec("color_attr", (ObjectSpec(a, 1, ca), ObjectSpec(b, 1, cb)))
                       for a, b in pairs for ca, cb in colour_pairs],
    }


def is_held_out(spec: PromptSpec) -> bool:
    """Whether a prompt shows a combination reserved for the test split."""
    shapes = frozenset(o.shape for o in spec.objects)
    if len(spec.objects) == 2 and shapes in HELD_OUT_SHAPE_PAIRS:
        return True
    if any((o.color, o.shape) in HELD_OUT_COLOR_SHAPES for o in spec.objects):
        return True
    return spec.family == "counting" and (spec.objects[0].count, spec.objects[0].shape) in HELD_OUT_COUNTS


def _attributes(spec: PromptSpec) -> set[tuple[str, object]]:
    """The shapes, colours, counts and relation a prompt names."""
    named = {("relation", spec.relation)} if spec.relation else set()
    for o in spec.objects:
        named |= {("shape", o.shape), ("count", o.count)} | ({("color", o.color)} if o.color else set())
    return named


@lru_cache(maxsize=1)
def _splits() -> dict[str, tuple[PromptSpec, ...]]:
    # two generators, so that test_ood is exactly the first edition's test split
    ood_rng, test_rng = random.Random(SPLIT_SEED), random.Random(SPLIT_SEED + 1)
    splits: dict[str, list[PromptSpec]] = {name: [] for name in SPLITS}
    for family, specs in all_specs().items():
        if family == "single_object":
            for name in SPLITS:
                splits[name] += specs
            continue
        held = [s for s in specs if is_held_out(s)]
        seen = [s for s in specs if not is_held_out(s)]
        splits["test_ood"] += held if len(held) <= TEST_PROMPTS_PER_FAMILY else ood_rng.sample(held, TEST_PROMPTS_PER_FAMILY)
        n_test = min(TEST_PROMPTS_PER_FAMILY, max(1, round(TEST_FRACTION * len(seen))))
        while True:  # redraw until RL trains on every shape, colour, count and relation the test names
            test = set(test_rng.sample(range(len(seen)), n_test))
            train = [s for i, s in enumerate(seen) if i not in test]
            if all(_attributes(s) <= set().union(*map(_attributes, train)) for i, s in enumerate(seen) if i in test):
                break
        splits["test"] += [s for i, s in enumerate(seen) if i in test]
        splits["train"] += train
    return {name: tuple(specs) for name, specs in splits.items()}


def split(name: str) -> tuple[PromptSpec, ...]:
    """The prompts of the ``"train"``, ``"test"`` or ``"test_ood"`` split."""
    splits = _splits()
    if name not in splits:
        raise ValueError(f"unknown toy split {name!r}; expected one of {SPLITS}")
    return splits[name]


def pretraining_specs() -> tuple[PromptSpec, ...]:
    """Every prompt of the world: what the base pipeline is pretrained on."""
    return tuple(s for specs in all_specs().values() for s in specs)


def sample_specs(specs: tuple[PromptSpec, ...] | list[PromptSpec], n: int, rng: random.Random,
                 family_weights: dict[str, float] | None = None) -> list[PromptSpec]:
    """Draw ``n`` prompts, first a family, then a prompt of it uniformly. Families are drawn uniformly (as
    GenEval weighs them), or in proportion to ``family_weights`` (a family it leaves out weighs 1)."""
    by_family: dict[str, list[PromptSpec]] = {}
    for s in specs:
        by_family.setdefault(s.family, []).append(s)
    families = [f for f in FAMILIES if f in by_family]
    if not family_weights:
        return [rng.choice(by_family[rng.choice(families)]) for _ in range(n)]
    weights = [float(family_weights.get(f, 1.0)) for f in families]
    return [rng.choice(by_family[rng.choices(families, weights)[0]]) for _ in range(n)]


def load_prompt_file(path: str | Path) -> list[PromptSpec | str]:
    """Read prompts from a ``.txt`` file (one per line) or a ``.jsonl`` file of toy specs.

    Lines of a ``.jsonl`` file are either :meth:`PromptSpec.to_dict` objects or ``{"prompt": ...}``.
    Raises ``FileNotFoundError``/``ValueError`` naming the file (and line) on bad input.
    """
    return [item for item, _ in load_prompt_records(path)]


def load_prompt_records(path: str | Path) -> list[tuple[PromptSpec | str, dict[str, Any]]]:
    """:func:`load_prompt_file` with each prompt's other JSONL fields (a source image, a target, a duration).

    A string field (or a list's string) naming a file that exists relative to the prompt file's folder becomes
    that file's absolute path, so a prompt file and its images can move together.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    out: list[tuple[PromptSpec | str, dict[str, Any]]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(data, dict) or ("objects" not in data and "prompt" not in data):
                raise ValueError(f"{path}:{lineno}: a JSONL prompt needs a 'prompt' field (or a toy spec's 'objects')")
            if "objects" in data:
                item: PromptSpec | str = PromptSpec.from_dict(data)
                fields = {k: v for k, v in data.items() if k not in PromptSpec.__dataclass_fields__}
            else:
                item, fields = str(data["prompt"]), {k: v for k, v in data.items() if k != "prompt"}
            out.append((item, {k: _resolved(v, path.parent) for k, v in fields.items()}))
        else:
            out.append((line, {}))
    if not out:
        raise ValueError(f"prompt file {path} contains no prompts")
    return out


def _resolved(value: Any, folder: Path) -> Any:
    """A relative file path that exists under ``folder`` as an absolute one (in a list too: a multi-image
    edit's sources); anything else unchanged."""
    if isinstance(value, list):
        return [_resolved(item, folder) for item in value]
    if isinstance(value, str) and value and not Path(value).is_absolute() and (folder / value).is_file():
        return str((folder / value).resolve())
    return value


@lru_cache(maxsize=1)
def _specs_by_prompt() -> dict[str, PromptSpec]:
    return {s.prompt: s for specs in all_specs().values() for s in specs}


def spec_from_prompt(prompt: str) -> PromptSpec:
    """The spec of a toy prompt given as text (raises ``KeyError`` naming the prompt if it is not one)."""
    try:
        return _specs_by_prompt()[prompt.strip().lower()]
    except KeyError:
        raise KeyError(f"{prompt!r} is not a toy-world prompt (see rewards.toyworld.prompts.all_specs())") from None
