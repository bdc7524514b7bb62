import importlib.util
from pathlib import Path

import pytest

from rewards.toyworld.prompts import all_specs
from rewards.toyworld.verifier import Detection, score_detections

_spec = importlib.util.spec_from_file_location("toy_gates", Path(__file__).parent.parent / "bench" / "toy_gates.py")
gates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gates)


def _det(shape, color, x, y):
    return Detection(shape, color, (x, y), 100, 0.9)


def test_failure_kinds_follow_the_verifiers_first_failed_requirement():
    specs = all_specs()
    position = next(s for s in specs["position"] if s.relation == "left of")
    a, b = (o.shape for o in position.objects)
    right_of = score_detections(position, [_det(a, "red", 25, 16), _det(b, "blue", 5, 16)])
    assert gates.failure_kind(position, right_of.reason) == "relation"
    missing = score_detections(position, [_det(a, "red", 5, 16)])
    assert gates.failure_kind(position, missing.reason) == "object"
    attr = specs["color_attr"][0]
    (o1, o2) = attr.objects
    swapped = score_detections(attr, [_det(o1.shape, o2.color, 5, 5), _det(o2.shape, o1.color, 25, 25)])
    assert gates.failure_kind(attr, swapped.reason) == "colour"
    counting = next(s for s in specs["counting"] if s.objects[0].count == 2)
    three = score_detections(counting, [_det(counting.objects[0].shape, "red", 5 + 10 * i, 5) for i in range(3)])
    assert gates.failure_kind(counting, three.reason) == "count"


def test_success_table_counts_prompts_by_their_success_rate():
    rows = [{"family": "position", "p": p} for p in (0.0, 0.0, 0.25, 1.0)] + [{"family": "colors", "p": 0.5}]
    table = gates.success_table(rows, 16)
    assert table["position"] == {"prompts": 4, "mean_p": pytest.approx(0.3125), "never": 0.5, "sometimes": 0.25,
                                 "always": 0.25, "pass@16": 0.5}
    assert table["all"]["prompts"] == 5 and table["all"]["sometimes"] == pytest.approx(0.4)
    assert table["all"]["pass@16"] == pytest.approx(0.6)


def test_shape_confusions_tell_a_leaked_shape_from_another():
    two = next(s for s in all_specs()["two_object"] if {o.shape for o in s.objects} == {"circle", "square"})
    leaked = [_det("square", "red", 5, 5), _det("square", "blue", 25, 25)]  # the prompt's square drawn twice
    assert gates.shape_confusion(two, leaked) == "circle -> square (leak)"
    foreign = [_det("triangle", "red", 5, 5), _det("square", "blue", 25, 25)]
    assert gates.shape_confusion(two, foreign) == "circle -> triangle (other)"
    right = [_det("circle", "red", 5, 5), _det("square", "blue", 25, 25)]
    assert gates.shape_confusion(two, right) is None  # nothing confused
    assert gates.shape_confusion(two, leaked[:1]) is None  # a missing object is not a confusion
    single = all_specs()["single_object"][0]
    assert gates.shape_confusion(single, [_det("square", "red", 5, 5)]) is None
