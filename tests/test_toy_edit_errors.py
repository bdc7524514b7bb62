"""bench/toy_edit_errors.py: each target object's outcome, checked on renders whose answer is known."""

import importlib.util
import random
from dataclasses import replace
from pathlib import Path

import pytest

from rewards.toyedit import EDIT_FAMILIES, render_pair, sample_edit
from rewards.toyedit.world import EditSpec
from rewards.toyworld import COLORS, SHAPES
from rewards.toyworld.render import render_objects
from rewards.toyworld.verifier import detect

_spec = importlib.util.spec_from_file_location("toy_edit_errors", Path(__file__).parent.parent / "bench" / "toy_edit_errors.py")
errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(errors)


def _specs(family: str, n: int = 6) -> list[EditSpec]:
    rng = random.Random(1)
    return [sample_edit(family, rng) for _ in range(n)]


def test_rendered_targets_are_right_and_pass_the_verifier():
    specs = [s for f in EDIT_FAMILIES for s in _specs(f)]
    table = errors.error_table([render_pair(s)[1] for s in specs], specs)
    assert all(row["failed"] == 0 and not row["outcomes"] for row in table.values())
    for spec in specs:
        assert set(errors.target_outcomes(detect(render_pair(spec)[1]), spec)) == {"right"}


def test_unedited_sources_fail_the_way_each_family_says():
    for spec in _specs("swap"):  # both objects are still where the other should be: right look, wrong place
        assert [errors.object_outcome(detect(render_pair(spec)[0]), o) for o in spec.target_objects()] == ["misplaced"] * 2
    for spec in _specs("recolor"):  # the subject stands where it should, in its old colour
        assert errors.target_outcomes(detect(render_pair(spec)[0]), spec)[spec.subject] == "old colour"
    specs = _specs("move")
    table = errors.error_table([render_pair(s)[0] for s in specs], specs)
    assert table["move"]["failed"] == len(specs) and table["move"]["outcomes"]["misplaced"] == len(specs)


@pytest.mark.parametrize("change, outcome", [("shape", "other shape"), ("leaked shape", "leaked shape"),
                                             ("colour", "other colour"), ("leaked colour", "leaked colour"),
                                             ("gone", "missing")])
def test_a_redrawn_or_dropped_object_is_named(change, outcome):
    spec = next(s for s in _specs("swap", 20) if len({o.color for o in s.objects}) == len(s.objects))
    target = list(spec.target_objects())
    subject, other = target[spec.subject], target[spec.other]
    unused_shape = next(s for s in SHAPES if s not in {o.shape for o in target})
    unused_colour = next(c for c in COLORS if c not in {o.color for o in target})
    drawn = [o for i, o in enumerate(target) if not (change == "gone" and i == spec.subject)]
    redrawn = {"shape": dict(shape=unused_shape), "leaked shape": dict(shape=other.shape),
               "colour": dict(color=unused_colour), "leaked colour": dict(color=other.color)}.get(change)
    if redrawn:
        drawn[spec.subject] = replace(subject, **redrawn)
    assert errors.target_outcomes(detect(render_objects(drawn)), spec)[spec.subject] == outcome
