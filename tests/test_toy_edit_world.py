"""The toy edit world: triples, the renderer's exact flow, the edit verifier and its splits."""

import random

import numpy as np
import pytest

from rewards.toyedit import (
    DIRECTIONS,
    EDIT_FAMILIES,
    MOVE_DISTANCE,
    EditSpec,
    edit_split,
    exact_flow,
    render_pair,
    sample_edit,
    verify_edit,
)
from rewards.toyworld.prompts import split as split_specs
from rewards.toyworld.render import PlacedObject, scene_fits


def _edits(n_per_family: int, seed: int = 0) -> list[EditSpec]:
    rng = random.Random(seed)
    return [sample_edit(f, rng) for f in EDIT_FAMILIES for _ in range(n_per_family)]


def test_rendered_targets_pass_and_unedited_sources_fail():
    for spec in _edits(60):
        source, target = render_pair(spec)
        assert verify_edit(source, target, spec).strict == 1.0, spec.instruction
        unedited = verify_edit(source, source, spec)
        assert unedited.strict == 0.0 and unedited.partial < 1.0, spec.instruction


def test_the_wrong_edit_of_the_same_scene_fails():
    for spec in _edits(30, seed=1):
        source, _ = render_pair(spec)
        if spec.family == "move":
            wrong = EditSpec("move", spec.objects, spec.subject,
                             direction=next(d for d in DIRECTIONS if d != spec.direction))
        elif spec.family == "recolor":
            wrong = EditSpec("resize", spec.objects, spec.subject)
        else:
            continue
        if not scene_fits(wrong.target_objects(), 32):
            continue
        _, wrong_target = render_pair(wrong)
        assert verify_edit(source, wrong_target, spec).strict == 0.0, (spec.instruction, wrong.instruction)


def test_a_move_of_the_wrong_length_fails_only_the_amount():
    obj = PlacedObject("circle", "red", 10, 4, 10)
    spec = EditSpec("move", (obj,), direction="right")
    source, _ = render_pair(spec)
    too_short = render_pair(EditSpec("recolor", (PlacedObject("circle", "red", 10, 4 + MOVE_DISTANCE // 2 - 1, 10),),
                                     new_color="blue"))[0]
    verdict = verify_edit(source, too_short, spec)
    assert verdict.strict == 0.0 and verdict.reason.startswith("not: the red circle moved right")
    slightly_long = render_pair(EditSpec("recolor", (PlacedObject("circle", "red", 10, 4 + MOVE_DISTANCE + 3, 10),),
                                         new_color="blue"))[0]
    assert verify_edit(source, slightly_long, spec).strict == 1.0


def test_exact_flow_carries_each_source_pixel_onto_its_colour_in_the_target():
    for spec in _edits(20, seed=2):
        if spec.family == "recolor":
            assert not exact_flow(spec).any()
            continue
        source, target = render_pair(spec)
        flow = exact_flow(spec)
        ys, xs = np.nonzero(np.linalg.norm(flow, axis=-1) > 0)
        assert len(ys) > 0
        tx = np.clip(np.floor(xs + 0.5 + flow[ys, xs, 0]).astype(int), 0, 31)
        ty = np.clip(np.floor(ys + 0.5 + flow[ys, xs, 1]).astype(int), 0, 31)
        agree = (np.abs(source[ys, xs].astype(int) - target[ty, tx].astype(int)).max(-1) <= 60).mean()
        assert agree > 0.9, (spec.instruction, agree)
    move = EditSpec("move", (PlacedObject("square", "blue", 4, 4, 10),), direction="down")
    flow = exact_flow(move)
    assert np.allclose(flow[4:14, 4:14], [0, MOVE_DISTANCE]) and not flow[:4].any()


def test_spec_round_trip_and_validation():
    spec = _edits(1)[1]
    assert EditSpec.from_dict(spec.to_dict()) == spec
    a, b = PlacedObject("circle", "red", 0, 0, 9), PlacedObject("circle", "blue", 20, 20, 9)
    with pytest.raises(ValueError, match="its own shape"):
        EditSpec("move", (a, b), direction="left")
    with pytest.raises(ValueError, match="direction"):
        EditSpec("move", (a,), direction="sideways")
    with pytest.raises(ValueError, match="new colour"):
        EditSpec("recolor", (a,), new_color="red")
    with pytest.raises(ValueError, match="unknown edit family"):
        EditSpec("rotate", (a,))
    assert EditSpec("swap", (a, PlacedObject("square", "blue", 20, 20, 9)), other=1).instruction == "swap the circle and the square"


def test_splits_are_fixed_stratified_and_disjoint():
    train, test = edit_split("train"), edit_split("test")
    assert train == edit_split("train") and len(train) == 512 and len(test) == 48
    assert {s.family for s in test} == set(EDIT_FAMILIES)
    assert not {s.to_dict()["objects"].__repr__() for s in train} & {s.to_dict()["objects"].__repr__() for s in test}
    with pytest.raises(ValueError, match="unknown toy edit split"):
        edit_split("val")


def test_toy_edit_splits_load_as_prompt_datasets_with_their_triples():
    from genrl.data import load_prompts, prompt_family

    data = load_prompts("toyedit:test")
    assert len(data) == 48 and data.prompts[0] == data.metadata[0]["spec"].instruction
    meta = data.metadata[5]
    source, target = render_pair(meta["spec"])
    assert np.array_equal(np.asarray(meta["image"]), source) and np.array_equal(np.asarray(meta["target"]), target)
    assert [prompt_family(m) for m in data.metadata].count("swap") == 12
    with pytest.raises(ValueError, match="unknown toy edit split 'val'"):
        load_prompts("toyedit:val")


def test_a_toy_source_narrowed_to_families_keeps_exactly_their_prompts_in_order():
    from genrl.data import load_prompts, prompt_family

    whole = load_prompts("toyedit:train")
    narrowed = load_prompts("toyedit:train/recolor,swap")
    expected = [p for p, m in zip(whole.prompts, whole.metadata, strict=True) if m["spec"].family in ("recolor", "swap")]
    assert narrowed.prompts == expected and len(expected) == 256
    assert {prompt_family(m) for m in narrowed.metadata} == {"recolor", "swap"}
    assert [m["spec"] for m in load_prompts("toy:test/position").metadata] == [
        s for s in split_specs("test") if s.family == "position"]
    with pytest.raises(ValueError, match=r"'toyedit:train/recolour': no family 'recolour'; it has \['move', 'recolor'"):
        load_prompts("toyedit:train/recolour")


def test_edit_grids_show_source_edit_and_target_side_by_side():
    from genrl.grid import edit_triples, make_grid

    edits = np.zeros((2, 32, 32, 3), dtype=np.float32)
    sources = [np.full((32, 32, 3), 0.5, dtype=np.float32)] * 2
    targets = [np.full((64, 64, 3), 255, dtype=np.uint8), None]
    strips = edit_triples(edits, sources, targets)
    assert strips.shape == (2, 32, 96, 3)
    assert np.allclose(strips[:, :, :32], 0.5, atol=1 / 255) and np.all(strips[:, :, 32:64] == 0)
    assert np.all(strips[:, :, 64:] == 1.0)  # a 64 px target resized; a missing one white
    square = make_grid(edits, ["a", "b"], columns=2, cell=64)
    wide = make_grid(strips, ["a", "b"], columns=2, cell=64)
    assert wide.size[1] == square.size[1] and wide.size[0] == 2 * (3 * 64 + 8) + 8
