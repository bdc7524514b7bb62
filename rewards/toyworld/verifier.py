"""Analytic verifier: detect the shapes in a *generated* image and score them against a spec.

It plays the role GenEval's object detector plays for real images:

1. every pixel that differs enough from the white background is assigned the palette colour
   whose direction from white it is closest to (cosine), so anti-aliased or faded edges keep
   their colour;
2. each colour's 8-connected components above a minimum area are objects;
3. an object's shape is the template (rendered at the object's bounding box) whose coarse
   profile is closest to the mask's (both area-averaged to a :data:`PROFILE_GRID` square grid);
   when that template's IoU with the mask is below :data:`MIN_SHAPE_IOU` it is ``"unknown"``.
   The coarse profile (a triangle's narrow top, a cross's empty corners) survives the rounding a
   decoder gives edges; pixel IoU alone does not (a rounded triangle fills 70 % of its box and
   reads as a square). Renders are classified exactly either way.

Scores follow GenEval: a group needs at least ``count`` objects of its shape (exactly
``count`` in the counting family), of which ``count`` must have the requested colour; a
relation must hold between some pair of the two groups' objects. Partial credit averages
the per-requirement scores (counting ``1-|n_req-n_found|/n_req``, colour match fraction,
position 0/1).

:func:`soft_score` is a dense version of the partial credit for training: each detected object
counts as each shape with the softmax of its template IoUs (:data:`SOFT_SHAPE_TEMPERATURE`), and a
relation by a sigmoid of its pixel margins, so a blob that is becoming the asked shape, or an object
moving to the asked side, earns credit before the discrete verdict flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .render import shape_coverage
from .world import BACKGROUND_RGB, COLORS, IMAGE_SIZE, RELATIONS, SHAPES, PromptSpec

#: A pixel is foreground when its distance from the background exceeds this share of the
#: distance between the background and the palette colour it points to.
FOREGROUND_ALPHA = 0.4
#: A foreground pixel whose direction from the background is further than this from every
#: palette colour (cosine) is left unlabelled.
MIN_COLOR_COSINE = 0.9
MIN_OBJECT_AREA = 16
MIN_SHAPE_IOU = 0.55
#: Side of the grid on which a mask's profile is compared with the shape templates'.
PROFILE_GRID = 6
#: A relation "A left of B" holds when A's centre is displaced from B's along the relation's
#: axis by at least this many pixels, and by at least as much as across it.
MIN_RELATION_OFFSET = 3.0
#: Soft credit: an object is each shape with probability softmax(template IoU / this); a clean render's IoU with
#: the other templates is at least 0.19 below its own (a circle's with the square's: 0.81), so p >= 0.96.
SOFT_SHAPE_TEMPERATURE = 0.05
#: Soft credit: a relation's margins (pixels) pass through a sigmoid of this scale.
SOFT_RELATION_SCALE = 1.5

_BG = np.asarray(BACKGROUND_RGB, dtype=np.float32)
_COLOR_NAMES = list(COLORS)
_COLOR_DIRS = np.stack([np.asarray(c, dtype=np.float32) - _BG for c in COLORS.values()])
_COLOR_NORMS = np.linalg.norm(_COLOR_DIRS, axis=1)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Detection:
    """An object found in an image."""

    shape: str  # one of SHAPES or "unknown"
    color: str
    center: tuple[float, float]  # bounding-box centre (x, y) in pixels
    area: int
    iou: float  # IoU with the best shape template
    shape_ious: tuple[float, ...] = ()  # IoU with each shape's template, in SHAPES order


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement of one image."""

    strict: float  # 1.0 when every requirement holds, else 0.0
    partial: float  # mean of the per-requirement scores, in [0, 1]
    detections: tuple[Detection, ...]
    reason: str  # what failed first, or "ok"


def _to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"expected an image of shape (H, W, 3) or (3, H, W), got {arr.shape}")
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {arr.shape}")
    if arr.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        # MIN_OBJECT_AREA, MIN_RELATION_OFFSET and the shape thresholds are tuned to the toy world's
        # images: on another size the verdicts mean nothing (a large noise image holds every shape)
        raise ValueError(f"the toy verifier scores {IMAGE_SIZE}x{IMAGE_SIZE} images (rewards.toyworld.world.IMAGE_SIZE), "
                         f"got {arr.shape[1]}x{arr.shape[0]}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return arr


def label_colors(image: np.ndarray) -> np.ndarray:
    """Per-pixel palette index (``-1`` for background or unlabelled) of an (H, W, 3) uint8 image."""
    diff = image.astype(np.float32) - _BG
    norm = np.linalg.norm(diff, axis=-1)
    cos = diff @ _COLOR_DIRS.T / np.maximum(norm[..., None] * _COLOR_NORMS, 1e-6)
    best = cos.argmax(-1)
    ok = (cos.max(-1) >= MIN_COLOR_COSINE) & (norm >= FOREGROUND_ALPHA * _COLOR_NORMS[best])
    return np.where(ok, best, -1)


def _area_average(values: np.ndarray, grid: int = PROFILE_GRID) -> np.ndarray:
    """Exact area average of a 2-D array onto a ``grid x grid`` raster (any input size)."""
    h, w = values.shape
    fine = np.repeat(np.repeat(values.astype(np.float32), grid, axis=0), grid, axis=1)
    return fine.reshape(grid, h, grid, w).mean(axis=(1, 3))


def template_iou(mask: np.ndarray, shape: str) -> float:
    """IoU of a cropped binary mask with ``shape``'s template rendered at the mask's box."""
    template = shape_coverage(shape, *mask.shape) >= 0.5
    return float((template & mask).sum() / max((template | mask).sum(), 1))


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Best-matching shape of a cropped binary mask (by coarse profile) and its IoU with that shape's template."""
    h, w = mask.shape
    profile = _area_average(mask)
    distances = {shape: float(np.abs(profile - _area_average(shape_coverage(shape, h, w))).mean()) for shape in SHAPES}
    best = min(distances, key=distances.get)
    iou = template_iou(mask, best)
    return (best if iou >= MIN_SHAPE_IOU else "unknown"), iou


def detect(image: np.ndarray) -> list[Detection]:
    """Find the objects of an image given as (H, W, 3) / (3, H, W), uint8 or float in [0, 1]."""
    labels = label_colors(_to_uint8_hwc(image))
    found: list[Detection] = []
    for ci, cname in enumerate(_COLOR_NAMES):
        components, _ = ndimage.label(labels == ci, structure=_EIGHT_CONNECTED)
        for idx, box in enumerate(ndimage.find_objects(components), start=1):
            mask = components[box] == idx
            area = int(mask.sum())
            if area < MIN_OBJECT_AREA:
                continue
            shape, iou = classify_shape(mask)
            # Bounding-box centre, as GenEval uses for relations (a triangle's centroid sits low).
            center = ((box[1].start + box[1].stop) / 2, (box[0].start + box[0].stop) / 2)
            found.append(Detection(shape, cname, center, area, iou, tuple(template_iou(mask, s) for s in SHAPES)))
    return found


def _relation_offsets(a: Detection, b: Detection, relation: str) -> tuple[float, float]:
    """A's displacement from B along the relation's axis and (absolute) across it, in pixels."""
    dx, dy = RELATIONS[relation]
    ox, oy = a.center[0] - b.center[0], a.center[1] - b.center[1]
    return ox * dx + oy * dy, abs(ox * dy - oy * dx)


def _relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    main, cross = _relation_offsets(a, b, relation)
    return main >= MIN_RELATION_OFFSET and main >= cross


def score_detections(spec: PromptSpec, detections: list[Detection]) -> Verdict:
    """Score detections against a spec (see the module docstring for the rules)."""
    scores: list[float] = []
    failure = ""
    groups: list[list[Detection]] = []
    for obj in spec.objects:
        of_shape = [d for d in detections if d.shape == obj.shape]
        n = len(of_shape)
        if spec.family == "counting":
            scores.append(max(0.0, 1.0 - abs(obj.count - n) / obj.count))
            ok = n == obj.count
        else:
            scores.append(min(n, obj.count) / obj.count)
            ok = n >= obj.count
        if not ok and not failure:
            failure = f"expected {obj.count} {obj.shape}(s), found {n}"
        matching = of_shape
        if obj.color is not None:
            matching = [d for d in of_shape if d.color == obj.color]
            scores.append(min(len(matching), obj.count) / obj.count)
            if len(matching) < obj.count and not failure:
                failure = f"expected {obj.color} {obj.shape}, found {[d.color for d in of_shape]}"
        groups.append(matching)
    if spec.relation is not None:
        held = any(_relation_holds(a, b, spec.relation) for a in groups[0] for b in groups[1] if a is not b)
        scores.append(float(held))
        if not held and not failure:
            failure = f"relation {spec.relation!r} does not hold"
    return Verdict(strict=float(not failure), partial=float(np.mean(scores)), detections=tuple(detections),
                   reason=failure or "ok")


def shape_probabilities(detection: Detection, temperature: float = SOFT_SHAPE_TEMPERATURE) -> np.ndarray:
    """How much a detected object counts as each shape (SHAPES order): softmax of its template IoUs / ``temperature``."""
    logits = np.asarray(detection.shape_ious, dtype=np.float64) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def _colour_match(detection: Detection, color: str | None) -> float:
    return float(color is None or detection.color == color)


def _soft_relation(a: Detection, b: Detection, relation: str) -> float:
    main, cross = _relation_offsets(a, b, relation)
    sigmoid = lambda m: 1.0 / (1.0 + np.exp(-m / SOFT_RELATION_SCALE))
    return float(sigmoid(main - MIN_RELATION_OFFSET) * sigmoid(main - cross))


def soft_score(spec: PromptSpec, detections: list[Detection], temperature: float = SOFT_SHAPE_TEMPERATURE) -> float:
    """Dense partial credit in [0, 1], the partial credit's requirements with soft shapes and relations.

    Each requested object takes, one slot per count, the remaining detection that best counts as its shape
    (ties broken by colour); its slots' mean shape probability is one requirement and, for a coloured object,
    the mean of shape probability times colour match another. Counting multiplies the first by
    ``1 - extra / count`` (extra: the remaining detections' summed probability of the shape). A
    relation scores the product of two sigmoids of its margins (``main - MIN_RELATION_OFFSET`` and
    ``main - |cross|``) between the two objects' first slots, times their shape probabilities. A higher
    ``temperature`` makes shapes count more evenly (denser credit, and less for a clean right shape).
    """
    pool = [(d, shape_probabilities(d, temperature)) for d in detections]
    scores: list[float] = []
    firsts: list[tuple[Detection, float] | None] = []
    for obj in spec.objects:
        k = SHAPES.index(obj.shape)
        slots: list[tuple[Detection, float, float]] = []
        for _ in range(obj.count):
            if not pool:
                break
            best = max(range(len(pool)), key=lambda i, k=k, color=obj.color: (pool[i][1][k],
                                                                             _colour_match(pool[i][0], color)))
            d, probs = pool.pop(best)
            slots.append((d, float(probs[k]), _colour_match(d, obj.color)))
        shape_credit = float(np.mean([p for _, p, _ in slots] + [0.0] * (obj.count - len(slots))))
        if spec.family == "counting":  # exactly count: what remains of the shape is subtracted
            shape_credit *= max(0.0, 1.0 - sum(float(probs[k]) for _, probs in pool) / obj.count)
        scores.append(shape_credit)
        if obj.color is not None:
            scores.append(float(np.mean([p * c for _, p, c in slots] + [0.0] * (obj.count - len(slots)))))
        firsts.append((slots[0][0], slots[0][1] * slots[0][2]) if slots else None)
    if spec.relation is not None:
        (a, b) = firsts
        scores.append(0.0 if a is None or b is None else _soft_relation(a[0], b[0], spec.relation) * a[1] * b[1])
    return float(np.mean(scores))


def verify(image: np.ndarray, spec: PromptSpec) -> Verdict:
    """Detect objects in ``image`` and score them against ``spec``."""
    return score_detections(spec, detect(image))
