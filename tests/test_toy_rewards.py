import random

import numpy as np
import pytest
import torch
from PIL import Image

from rewards import Reward, RewardOutput, ToyVerifierReward, available_rewards, build_reward, to_image_tensor
from rewards.toyworld.prompts import split
from rewards.toyworld.render import render


def _scenes(n=6, seed=0):
    rng = random.Random(seed)
    specs = list(split("test"))[:n]
    return specs, np.stack([render(s, rng)[0] for s in specs])


def test_verifier_reward_scores_ground_truth_as_one():
    specs, images = _scenes()
    out = build_reward("toy_verifier")(images, [s.prompt for s in specs])
    assert out.scores.tolist() == [1.0] * len(specs)
    assert "toy_verifier" in available_rewards()


def test_verifier_reward_accepts_pil_tensors_and_metadata_specs():
    specs, images = _scenes()
    reward = ToyVerifierReward(mode="partial")
    pil = [Image.fromarray(im) for im in images]
    chw = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    a = reward(pil, [s.prompt for s in specs]).scores
    b = reward(chw, ["ignored"] * len(specs), [{"spec": s.to_dict()} for s in specs]).scores
    torch.testing.assert_close(a, b)


def test_verifier_reward_soft_mode_is_the_soft_credit_of_the_same_detections():
    from rewards.toyworld.verifier import detect, soft_score

    specs, images = _scenes(n=8)
    shuffled = [specs[(i + 3) % len(specs)] for i in range(len(specs))]
    out = ToyVerifierReward(mode="soft")(images, [s.prompt for s in shuffled])
    expected = [soft_score(spec, detect(image)) for image, spec in zip(images, shuffled, strict=True)]
    torch.testing.assert_close(out.scores, torch.tensor(expected, dtype=torch.float32))
    assert out.info["soft"] == pytest.approx(expected) and len(out.info["strict"]) == len(specs)
    right = ToyVerifierReward(mode="soft")(images, [s.prompt for s in specs]).scores
    assert right.min() > 0.85 and right.mean() > out.scores.mean() + 0.3


def test_wrong_prompts_score_low():
    specs, images = _scenes(n=12)
    shuffled = [specs[(i + 5) % len(specs)].prompt for i in range(len(specs))]
    assert ToyVerifierReward()(images, shuffled).scores.mean() < 0.3


def test_reward_input_errors_name_the_problem():
    specs, images = _scenes(n=2)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        ToyVerifierReward()(images, [specs[0].prompt])
    with pytest.raises(KeyError, match="not a toy-world prompt"):
        ToyVerifierReward()(images, ["a photo of a dog", "a cat"])
    with pytest.raises(KeyError, match="unknown reward"):
        build_reward("no_such_reward")
    with pytest.raises(ValueError, match="mode"):
        ToyVerifierReward(mode="fuzzy")
    with pytest.raises(ValueError, match="temperature"):
        ToyVerifierReward(mode="soft", temperature=0.0)
    assert to_image_tensor(images).shape == (2, 3, 32, 32)


def test_toy_clip_prefers_the_matching_prompt_and_passes_gradients():
    from rewards import ClipScoreReward

    specs, images = _scenes(n=12, seed=3)
    reward = ClipScoreReward("toy")
    pixels = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    right = reward(pixels, [s.prompt for s in specs])
    wrong = reward(pixels.detach(), [specs[(i + 5) % len(specs)].prompt for i in range(len(specs))])
    assert (torch.tensor(right.info["cosine"]) > torch.tensor(wrong.info["cosine"])).float().mean() >= 0.75
    right.scores.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    single = reward(pixels.detach()[:1], [specs[0].prompt]).scores
    torch.testing.assert_close(single, right.scores.detach()[:1], atol=1e-5, rtol=1e-4)  # batching invariance


class _Constant(Reward):
    """A reward returning fixed scores."""

    def __init__(self, values):
        self.values = torch.tensor(values, dtype=torch.float32)

    def score(self, images, prompts, metadata):
        return RewardOutput(self.values.clone())


def test_weighted_sum_logs_components_and_flags_nonfinite_by_name():
    from rewards import WeightedSum

    specs, images = _scenes(n=3)
    combo = WeightedSum({"verifier": ToyVerifierReward(), "flaky": _Constant([0.5, float("nan"), 1.0])},
                        weights={"verifier": 2.0, "flaky": 0.5})
    with pytest.warns(RuntimeWarning, match="'flaky'.*\\[1\\]"):
        out = combo(images, [s.prompt for s in specs])
    assert out.info["nonfinite"] == {"flaky": [1]}
    assert out.scores[0] == pytest.approx(2.0 + 0.25) and torch.isnan(out.scores[1])
    torch.testing.assert_close(out.info["verifier"], torch.ones(3))
    by_name = WeightedSum({"toy_verifier": 1.0})
    assert by_name(images, [s.prompt for s in specs]).scores.tolist() == [1.0, 1.0, 1.0]


def test_ink_balance_is_left_minus_right_ink_and_needs_a_layout_change():
    specs, images = _scenes(n=4)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    ink = 1 - images.astype(np.float64).mean(axis=-1) / 255  # independent: numpy over HWC uint8
    half = ink.shape[2] // 2
    expected = ink[:, :, :half].mean(axis=(1, 2)) - ink[:, :, -half:].mean(axis=(1, 2))
    left = build_reward("ink_balance")(x, [s.prompt for s in specs]).scores
    np.testing.assert_allclose(left.double().numpy(), expected, atol=1e-6)
    # mirroring the layout flips the sign; the "right" side is the negative; total ink alone does not count
    torch.testing.assert_close(build_reward("ink_balance")(x.flip(-1), ["p"] * 4).scores, -left)
    torch.testing.assert_close(build_reward("ink_balance", side="right")(x, ["p"] * 4).scores, -left)
    assert build_reward("ink_balance")(torch.zeros(2, 3, 8, 9), ["p"] * 2).scores.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="side"):
        build_reward("ink_balance", side="up")
