import random

import numpy as np
import pytest

from rewards.toyworld.prompts import all_specs, sample_specs, split
from rewards.toyworld.render import PlacedObject, render, render_objects, shape_coverage
from rewards.toyworld.verifier import (
    Detection,
    classify_shape,
    detect,
    score_detections,
    shape_probabilities,
    soft_score,
    verify,
)
from rewards.toyworld.world import COLORS, IMAGE_SIZE, SHAPES, ObjectSpec, PromptSpec

ALL = [s for specs in all_specs().values() for s in specs]


def test_verifier_passes_ground_truth_scenes():
    rng = random.Random(123)
    specs = sample_specs(ALL, 1200, rng)
    by_family: dict[str, list[float]] = {}
    for spec in specs:
        image, _ = render(spec, rng)
        by_family.setdefault(spec.family, []).append(verify(image, spec).strict)
    overall = np.mean([v for vals in by_family.values() for v in vals])
    assert overall >= 0.99, by_family
    assert all(np.mean(v) >= 0.97 for v in by_family.values())


def test_verifier_rejects_wrong_prompts():
    rng = random.Random(7)
    strict, partial = [], []
    for spec in sample_specs(ALL, 400, rng):
        image, _ = render(spec, rng)
        other = rng.choice([s for s in split("train") if s.prompt != spec.prompt])
        v = verify(image, other)
        strict.append(v.strict)
        partial.append(v.partial)
    assert np.mean(strict) < 0.1
    assert np.mean(partial) < 0.45


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [9, 11, 14])
def test_shapes_are_classified_at_all_sizes(shape, size):
    assert classify_shape(shape_coverage(shape, size) >= 0.5)[0] == shape
    image = render_objects([PlacedObject(shape, "green", 5, 7, size)])
    (det,) = detect(image)
    assert (det.shape, det.color) == (shape, "green")
    assert det.center == pytest.approx((7 + size / 2, 5 + size / 2), abs=0.8)


def test_detect_accepts_float_and_channels_first():
    rng = random.Random(0)
    spec = split("test")[10]
    image, _ = render(spec, rng)
    as_float = image.astype(np.float32) / 255.0
    assert verify(as_float, spec) == verify(image, spec)
    assert verify(as_float.transpose(2, 0, 1), spec) == verify(image, spec)


def test_blank_and_noise_images_score_zero():
    spec = PromptSpec("single_object", (ObjectSpec("circle"),))
    assert verify(np.full((32, 32, 3), 255, np.uint8), spec).strict == 0.0
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert verify(noise, spec).strict == 0.0


@pytest.mark.parametrize("shape, size", [((2400, 2400, 3), "2400x2400"), ((3, 64, 64), "64x64"),
                                         ((32, 48, 3), "48x32")])
def test_images_of_another_size_are_rejected_not_scored(shape, size):
    # a 2400 px noise image used to score strict 1.0 for "a photo of a circle"
    spec = PromptSpec("single_object", (ObjectSpec("circle"),))
    noise = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"scores {IMAGE_SIZE}x{IMAGE_SIZE} images .*got {size}$"):
        verify(noise, spec)


def _det(shape, color="red", x=10.0, y=10.0):
    return Detection(shape, color, (x, y), 50, 0.9)


def test_counting_partial_credit_formula():
    spec = PromptSpec("counting", (ObjectSpec("square", 3),))
    for found in range(6):
        v = score_detections(spec, [_det("square", x=5.0 * i) for i in range(found)])
        assert v.partial == pytest.approx(max(0.0, 1 - abs(3 - found) / 3))
        assert v.strict == float(found == 3)


def test_colour_and_position_partial_credit():
    spec = PromptSpec("color_attr", (ObjectSpec("circle", 1, "red"), ObjectSpec("square", 1, "blue")))
    v = score_detections(spec, [_det("circle", "red"), _det("square", "green")])
    assert (v.strict, v.partial) == (0.0, pytest.approx(0.75))  # shapes 1 + 1, colours 1 + 0
    pos = PromptSpec("position", (ObjectSpec("circle"), ObjectSpec("square")), "left of")
    left = score_detections(pos, [_det("circle", x=5), _det("square", x=20)])
    right = score_detections(pos, [_det("circle", x=20), _det("square", x=5)])
    diagonal = score_detections(pos, [_det("circle", x=5, y=5), _det("square", x=10, y=25)])
    assert (left.strict, left.partial) == (1.0, 1.0)
    assert (right.strict, right.partial) == (0.0, pytest.approx(2 / 3))
    assert diagonal.strict == 0.0


def test_renderer_respects_the_spec():
    rng = random.Random(5)
    for spec in ALL[::7]:
        image, objects = render(spec, rng)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert len(objects) == sum(o.count for o in spec.objects)
        for obj, want in zip(objects, [o for o in spec.objects for _ in range(o.count)]):
            assert obj.shape == want.shape and obj.color in COLORS
            assert want.color is None or obj.color == want.color


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [10, 12, 14])
def test_shapes_with_rounded_edges_keep_their_class(shape, size):
    """A decoder rounds edges; a blurred, re-thresholded shape is still that shape (pixel IoU alone read a
    rounded triangle as a square)."""
    from scipy import ndimage

    padded = np.pad(shape_coverage(shape, size), 3)
    rounded = ndimage.gaussian_filter(padded, 1.0) >= 0.5  # corners rounded off, edges kept in place
    ys, xs = np.nonzero(rounded)
    crop = rounded[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert classify_shape(crop)[0] == shape


def test_a_blob_is_not_read_as_an_angular_shape():
    yy, xx = np.mgrid[:12, :12]
    blob = ((xx - 5.5) / 6) ** 2 + ((yy - 5.5) / 6) ** 2 <= 1.0
    assert classify_shape(blob)[0] == "circle"
    ragged = np.random.default_rng(0).random((12, 12)) < 0.5  # noise fills half its box, like a triangle
    assert classify_shape(ragged)[0] == "unknown"


def _soft_det(shape, color="red", x=10.0, y=10.0, sharp=True):
    """A detection whose template IoUs are those of a clean shape (its own 0.95, others 0.7) or of a blob."""
    ious = tuple((0.95 if s == shape else 0.7) if sharp else 0.8 for s in SHAPES)
    return Detection(shape, color, (x, y), 50, ious[SHAPES.index(shape)], ious)


def test_soft_credit_separates_renders_from_wrong_prompts():
    rng = random.Random(11)
    right, wrong = [], []
    for spec in sample_specs(ALL, 300, rng):
        image, _ = render(spec, rng)
        detections = detect(image)
        right.append(soft_score(spec, detections))
        other = rng.choice([s for s in ALL if s.family == spec.family and s.prompt != spec.prompt] or [spec])
        wrong.append(soft_score(other, detections))
    assert min(right) > 0.85 and np.mean(right) > 0.95
    assert np.mean(wrong) < 0.4


@pytest.mark.parametrize("shape", SHAPES)
def test_a_clean_render_counts_as_its_own_shape(shape):
    (detection,) = detect(render_objects([PlacedObject(shape, "blue", 8, 8, 13)]))
    probs = shape_probabilities(detection)
    assert probs[SHAPES.index(shape)] > 0.96 and probs.sum() == pytest.approx(1.0)
    assert soft_score(PromptSpec("single_object", (ObjectSpec(shape),)), [detection]) > 0.96


def test_soft_credit_rises_continuously_where_the_verdict_flips():
    spec = PromptSpec("position", (ObjectSpec("circle"), ObjectSpec("square")), "left of")
    offsets = np.linspace(-6.0, 12.0, 37)  # the circle's offset to the left of the square, in pixels
    soft = [soft_score(spec, [_soft_det("circle", x=20 - d), _soft_det("square", x=20.0)]) for d in offsets]
    strict = [score_detections(spec, [_soft_det("circle", x=20 - d), _soft_det("square", x=20.0)]).strict
              for d in offsets]
    assert (np.diff(soft) > 0).all()  # every pixel toward the asked side earns credit
    assert max(np.diff(soft)) < 0.05  # no jump where the verdict flips (at MIN_RELATION_OFFSET)
    assert strict[0] == 0.0 and strict[-1] == 1.0 and soft[-1] > 0.95 and soft[0] < 0.7
    # a blob (equal IoU with every template) counts as a quarter of each shape: less than a clean shape
    blob = soft_score(spec, [_soft_det("circle", x=5, sharp=False), _soft_det("square", x=25.0)])
    assert soft_score(spec, [_soft_det("circle", x=5), _soft_det("square", x=25.0)]) > blob > 0.3


def test_soft_credit_of_colours_and_counts():
    spec = PromptSpec("color_attr", (ObjectSpec("circle", 1, "red"), ObjectSpec("square", 1, "blue")))
    swapped = soft_score(spec, [_soft_det("circle", "blue"), _soft_det("square", "red")])
    right = soft_score(spec, [_soft_det("circle", "red"), _soft_det("square", "blue")])
    assert right > 0.95 and swapped == pytest.approx(right / 2, abs=0.01)  # shapes kept, both colours lost
    count = PromptSpec("counting", (ObjectSpec("square", 2),))
    scores = [soft_score(count, [_soft_det("square", x=8.0 * i) for i in range(n)]) for n in range(5)]
    assert scores[2] == max(scores) > 0.95 and scores[1] < scores[2] > scores[3] > scores[4]
    assert scores[0] == 0.0
