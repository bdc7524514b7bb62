"""MotionNFT's motion-alignment reward and the flow estimators behind it."""

import math
import random

import numpy as np
import pytest
import torch

from rewards.motion_alignment import MotionAlignmentReward, motion_alignment, motion_terms
from rewards.optical_flow import RAFTFlow, build_flow_estimator
from rewards.optional import MissingExtraError
from rewards.toyedit import EDIT_FAMILIES, exact_flow, render_pair, sample_edit

LEVELS = {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}


def _flows(n=6, h=12, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, h, w, generator=g) * 3, torch.randn(n, 2, h, w, generator=g) * 3


def _reference_terms(fp: np.ndarray, fg: np.ndarray) -> tuple[float, float, float, float]:
    """The spec's formulas written out per pixel for one (2, H, W) pair."""
    _, h, w = fp.shape
    d = math.hypot(h, w)
    fp, fg = fp / d, fg / d
    vec = np.mean((np.abs(fp - fg) + 1e-6) ** 0.4)
    total, count = 0.0, 0
    for y in range(h):
        for x in range(w):
            g, p = fg[:, y, x], fp[:, y, x]
            if np.linalg.norm(g) > 0.002:
                cos = p @ g / max(np.linalg.norm(p) * np.linalg.norm(g), 1e-8)
                total += 0.5 * (1 - cos)
                count += 1
    direction = total / max(count, 1)
    movement = max(0.0, 0.01 + 0.5 * np.linalg.norm(fg, axis=0).mean() - np.linalg.norm(fp, axis=0).mean())
    loss = 0.7 * vec + 0.2 * direction + 0.1 * movement
    n = min(max((loss - 1e-6 ** 0.4) / (1 - 1e-6 ** 0.4), 0), 1)
    return vec, direction, movement, round(5 * (1 - n)) / 5


def test_terms_equal_an_independent_computation():
    pred, truth = _flows()
    truth[0] = 0  # no moving pixel: the direction term is 0
    pred[1] = 0  # static prediction
    terms = motion_terms(pred, truth)
    for i in range(pred.shape[0]):
        vec, direction, movement, reward = _reference_terms(pred[i].double().numpy(), truth[i].double().numpy())
        assert terms["vector"][i].item() == pytest.approx(vec, rel=1e-9)
        assert terms["direction"][i].item() == pytest.approx(direction, rel=1e-9, abs=1e-12)
        assert terms["movement"][i].item() == pytest.approx(movement, rel=1e-9, abs=1e-12)
        assert terms["reward"][i].item() == pytest.approx(reward)


def test_identical_flows_give_one_and_rewards_take_six_levels():
    pred, truth = _flows(n=64, seed=1)
    assert torch.all(motion_alignment(truth, truth) == 1.0)
    scale = torch.linspace(0, 3, 64).view(64, 1, 1, 1)
    values = {round(v, 6) for v in motion_alignment(truth + scale * pred, truth).tolist()}
    assert values <= LEVELS and len(values) >= 3


def test_static_or_reversed_predictions_score_at_most_the_identical_case():
    _, truth = _flows(n=16, seed=2)
    for wrong in (torch.zeros_like(truth), -truth):
        terms = motion_terms(wrong, truth)
        assert torch.all(terms["reward"] <= 1.0) and torch.all(terms["loss"] > motion_terms(truth, truth)["loss"])


def test_movement_hinge_is_positive_only_when_the_prediction_moves_too_little():
    _, truth = _flows(n=1, h=8, w=6, seed=3)
    diagonal = math.hypot(8, 6)
    gt_mean = truth.norm(dim=1).mean().item() / diagonal
    for factor in np.linspace(0, 1.2, 25):
        pred = truth * factor
        moved = pred.norm(dim=1).mean().item() / diagonal
        hinge = motion_terms(pred, truth)["movement"].item()
        assert (hinge > 0) == (moved < 0.01 + 0.5 * gt_mean)


def test_uniform_resolution_scaling_leaves_the_reward_unchanged():
    pred, truth = _flows(n=8, h=10, w=14, seed=4)
    up = lambda f: torch.repeat_interleave(torch.repeat_interleave(f, 3, dim=2), 3, dim=3) * 3
    small, large = motion_terms(pred, truth), motion_terms(up(pred), up(truth))
    for key in ("vector", "direction", "movement", "reward"):
        assert torch.allclose(small[key], large[key], atol=1e-9)


def _toy_batch(n_per_family=4, families=("move", "swap"), seed=0):
    rng = random.Random(seed)
    specs = [sample_edit(f, rng) for f in families for _ in range(n_per_family)]
    pairs = [render_pair(s) for s in specs]
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255
    sources = torch.stack([as_tensor(s) for s, _ in pairs])
    targets = torch.stack([as_tensor(t) for _, t in pairs])
    return specs, sources, targets


def test_toy_object_flow_is_the_renderers_exact_flow():
    specs, sources, targets = _toy_batch(n_per_family=6, families=EDIT_FAMILIES)
    flow = build_flow_estimator("toy_objects")(sources, targets)
    exact = torch.stack([torch.from_numpy(exact_flow(s)).permute(2, 0, 1) for s in specs])
    assert (flow - exact).norm(dim=1).mean() < 0.05


def test_reward_on_toy_edits_prefers_the_true_edit():
    specs, sources, targets = _toy_batch()
    reward = MotionAlignmentReward(flow="toy_objects")
    meta = [{"image": s, "target": t, "spec": spec} for s, t, spec in zip(sources, targets, specs)]
    prompts = [s.instruction for s in specs]
    true_edit = reward(targets, prompts, meta).scores
    unedited = reward(sources, prompts, meta).scores
    assert torch.all(true_edit == 1.0) and torch.all(unedited < 1.0)
    exact = MotionAlignmentReward(flow="toy_objects", ground_truth="exact")
    assert torch.equal(exact(targets, prompts, meta).scores, true_edit)
    as_dicts = [{**m, "spec": m["spec"].to_dict()} for m in meta]  # a prompt file's spec
    assert torch.equal(exact(targets, prompts, as_dicts).scores, true_edit)
    with pytest.raises(TypeError, match="sample 0's metadata 'spec' is not a toy edit"):
        exact(targets, prompts, [{**m, "spec": "move it"} for m in meta])


def test_bad_input_is_named():
    specs, sources, targets = _toy_batch(n_per_family=1)
    reward = MotionAlignmentReward(flow="toy_objects")
    prompts = [s.instruction for s in specs]
    with pytest.raises(KeyError, match="sample 0 has no ground-truth edit"):
        reward(targets, prompts, [{"image": s} for s in sources])
    small = torch.nn.functional.interpolate(targets, size=(16, 16))
    with pytest.raises(ValueError, match="sample 0: source \\(32, 32\\) and ground-truth target \\(16, 16\\) differ"):
        reward(targets, prompts, [{"image": s, "target": t} for s, t in zip(sources, small)])
    with pytest.raises(ValueError, match="unknown flow estimator 'gmflow'"):
        MotionAlignmentReward(flow="gmflow")
    with pytest.raises(ValueError, match="needs a toy edit spec; sample 0"):
        MotionAlignmentReward(flow="toy_objects", ground_truth="exact")(targets, prompts, [{"image": s} for s in sources])


def test_opencv_estimators_recover_a_shift_and_name_their_extra(monkeypatch):
    g = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=(48, 48), mode="bicubic").clamp(0, 1)
    shifted = torch.roll(texture, shifts=3, dims=3)
    for name in ("farneback", "dis"):
        flow = build_flow_estimator(name)(texture, shifted)[0, :, 12:36, 12:36]
        assert flow[0].median().item() == pytest.approx(3.0, abs=0.5), name
        assert flow[1].abs().median().item() < 0.5
    import importlib
    real = importlib.import_module

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("no cv2")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_cv2)
    with pytest.raises(MissingExtraError, match=r"\.\[flow\]"):
        build_flow_estimator("farneback")


def test_raft_loads_weights_only_and_refuses_what_it_cannot_find(tmp_path, monkeypatch):
    torch.manual_seed(0)
    random_raft = RAFTFlow("small", iterations=2)
    _, sources, targets = _toy_batch(n_per_family=1)
    flow = random_raft(sources, targets)
    assert flow.shape == (2, 2, 32, 32) and torch.isfinite(flow).all()
    path = tmp_path / "raft.pth"
    torch.save(random_raft.model.state_dict(), path)
    reloaded = RAFTFlow("small", weights=str(path), iterations=2)
    assert torch.equal(reloaded(sources, targets), flow)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="raft_small: weights 'C_T_V2' are not in the torch hub cache"):
        RAFTFlow("small", weights="C_T_V2")
    with pytest.raises(ValueError, match="unknown weights 'C_T_V9'"):
        RAFTFlow("small", weights="C_T_V9")
