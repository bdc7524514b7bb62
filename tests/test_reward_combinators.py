import math

import pytest
import torch

from rewards import (
    Ensemble,
    LSCReward,
    PARReward,
    ReferenceRewards,
    Reward,
    RewardOutput,
    aggregate,
    lsc,
    par,
)


class Fixed(Reward):
    """A reward returning fixed scores, whatever the images."""

    def __init__(self, values):
        self.values = torch.tensor(values, dtype=torch.float32)

    def score(self, images, prompts, metadata):
        return RewardOutput(self.values.clone())


IMAGES = torch.zeros(3, 3, 8, 8)
PROMPTS = ["p0", "p1", "p2"]


def test_ensemble_aggregators_invariants():
    scores = torch.randn(5, 7)
    mean, wco, uwo = (aggregate(scores, m, lam=0.5) for m in ("mean", "wco", "uwo"))
    assert (wco <= mean).all() and (uwo <= mean).all()
    torch.testing.assert_close(aggregate(scores, "uwo", lam=0.0), mean)
    torch.testing.assert_close(uwo, scores.mean(0) - 0.5 * scores.var(0, correction=0))
    agree = torch.ones(4, 3) * torch.tensor([0.1, 0.5, 0.9])
    for mode in ("mean", "wco", "uwo"):
        torch.testing.assert_close(aggregate(agree, mode), agree[0])
    with pytest.raises(ValueError, match="unknown ensemble mode 'max'"):
        aggregate(scores, "max")


def test_ensemble_reward_over_members():
    ens = Ensemble([Fixed([1.0, 2.0, 3.0]), Fixed([3.0, 2.0, 1.0])], mode="wco")
    assert ens(IMAGES, PROMPTS).scores.tolist() == [1.0, 2.0, 1.0]


def test_lsc_properties():
    r = torch.linspace(-5, 5, 101)
    u = lsc(r, torch.tensor(0.5))
    assert (u < 0).all() and (u.diff() > 0).all() and (u.diff().diff() < 1e-6).all()  # increasing, concave
    assert lsc(torch.tensor(2.0), torch.tensor(2.0)).item() == pytest.approx(math.log(0.5))
    a, b = torch.tensor([0.3]), torch.tensor([-1.2])
    torch.testing.assert_close(lsc(a, 0.1) + lsc(b, -0.2), torch.log(torch.sigmoid(a - 0.1) * torch.sigmoid(b + 0.2)))


def test_par_properties():
    refs = torch.tensor([[0.0, 1.0, 2.0]])
    r = torch.linspace(-4, 6, 50)
    out = par(r, refs.expand(50, 3))
    assert ((out > 0) & (out < 1)).all() and (out.diff() > 0).all()
    assert par(torch.tensor([1.5]), torch.full((1, 4), 1.5)).item() == 0.5


def test_reference_transforms_use_per_prompt_base_rewards():
    refs = ReferenceRewards()
    for p, vals in zip(PROMPTS, ([0.0, 2.0], [1.0, 1.0], [5.0, 5.0])):
        refs.add(p, vals)
    lsc_out = LSCReward(Fixed([1.0, 1.0, 1.0]), refs)(IMAGES, PROMPTS)
    expected_ref = torch.tensor([1.0 + 1.0364333894937898 * 1.0, 1.0, 5.0])
    torch.testing.assert_close(lsc_out.info["reference"], expected_ref)
    torch.testing.assert_close(lsc_out.scores, torch.nn.functional.logsigmoid(1.0 - expected_ref))
    par_out = PARReward(Fixed([1.0, 1.0, 1.0]), refs)(IMAGES, PROMPTS)
    assert par_out.scores[1].item() == 0.5
    with pytest.raises(KeyError, match="'unknown'"):
        refs.get("unknown")
    with pytest.raises(ValueError, match="non-finite"):
        refs.add("p", [float("nan")])


def test_a_reward_declares_only_attributes_the_framework_reads():
    # name (messages, components), modality (input conversion, the reward server's wire format),
    # differentiable (combined by the ensembles and transforms), required_metadata (checked before score),
    # arity ("set": DRAGON builds its demonstrations over the epoch's set, genrl.algorithms.dragon.single_set_reward)
    assert set(Reward.__annotations__) == {"name", "modality", "differentiable", "arity", "required_metadata"}
    with pytest.raises(KeyError, match="lacks metadata"):
        type("NeedsSpec", (Fixed,), {"required_metadata": ("spec",)})([1.0, 2.0, 3.0])(IMAGES, PROMPTS)


def test_reference_rewards_round_trip_through_a_file_and_the_transforms_build_from_a_config(tmp_path):
    from rewards import build_reward

    refs = ReferenceRewards()
    for p, vals in zip(PROMPTS, ([0.0, 2.0], [1.0, 1.0], [5.0, 5.0])):
        refs.add(p, vals)
    path = tmp_path / "refs.json"
    path.write_text(refs.as_json())
    again = ReferenceRewards.load(path)
    assert all(torch.equal(again.get(p), refs.get(p)) for p in PROMPTS)
    # from a config: the base as {name, options}, the references as the file
    par_cfg = build_reward("par", base={"name": "brightness"}, references=str(path), k=2.0)
    brightness = build_reward("brightness")(IMAGES, PROMPTS).scores
    expected = torch.stack([torch.sigmoid(2.0 * (brightness[i] - refs.get(p))).mean() for i, p in enumerate(PROMPTS)])
    torch.testing.assert_close(par_cfg(IMAGES, PROMPTS).scores, expected)
    lsc_cfg = build_reward("lsc", base={"name": "brightness"}, references=str(path))
    torch.testing.assert_close(lsc_cfg(IMAGES, PROMPTS).scores,
                               LSCReward(build_reward("brightness"), refs)(IMAGES, PROMPTS).scores)
    with pytest.raises(FileNotFoundError, match="make it with scripts/reference_rewards.py"):
        build_reward("par", base={"name": "brightness"}, references=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match=r"par: base must be a reward or a mapping \{name, options\}"):
        build_reward("par", base={"reward": "brightness"}, references=str(path))
