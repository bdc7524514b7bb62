"""Ctrl-U as a training algorithm (train.algorithm=ctrl_u): its loss against a hand-written computation, its gradient
reaching the LoRA through both copies, the data images' encoding, bad configs refused by key, and a short toy run
raising its reward."""

import pytest
import torch
from test_sd3_rollout import _lora_policy
from test_trainer import CONFIGS, tiny_overrides

from genrl.algorithms.base import LossContext, RolloutBatch
from genrl.algorithms.ctrl_u import CtrlU, reward_weight
from genrl.config import ConfigError, load_config
from genrl.trainer import Trainer
from rewards import WeightedSum
from rewards.brightness import LUMA, BrightnessReward
from rewards.seeding import derived_seed

PROMPTS = ["a photo of a red circle", "a photo of two squares", "a photo of a blue cross", "a photo of a triangle"]
KEY = (7, 0, 0, 0)


def _algorithm(**extra) -> CtrlU:
    values = {"train.algorithm": "ctrl_u", "sample.noise_level": 0.0, "sample.same_latent": False,
              "reward.weights": "{brightness: 1.0}", "reward.options": "{}", **extra}
    algo = CtrlU(load_config(None, [f"{k}={v}" for k, v in values.items()]))
    algo.reward_fn = WeightedSum({"brightness": BrightnessReward()})
    return algo


def _unit(adapter, x0: torch.Tensor, epoch: int = 3) -> RolloutBatch:
    from genrl.sampling.rollout import Trajectory

    traj = Trajectory.of_latents(x0)
    return RolloutBatch(torch.arange(len(PROMPTS)), PROMPTS, [{}] * len(PROMPTS), adapter.encode(PROMPTS),
                        adapter.schedule(4), traj, extras={"seed_key": KEY, "epoch": epoch})


def _hand_written(adapter, x0, t_max=0.4, reg=0.1, offset=1.0, step=1e-3, weight=1.0):
    """L_diff + w L_rew + reg U, written out (the algorithm's noise and levels from the same seed)."""
    g = torch.Generator().manual_seed(derived_seed(*KEY, "ctrl_u"))
    eps = torch.randn(x0.shape, generator=g)
    s1 = torch.rand(x0.shape[0], generator=g)
    s2 = torch.clamp(s1 + step, max=1.0)
    cond = adapter.encode(PROMPTS)
    losses, rewards = [], []
    for s in (s1, s2):
        b = s.view(-1, 1, 1, 1)
        x = (1 - b) * x0 + b * eps
        v = adapter.velocity(x, s, cond)
        losses.append(((v - (eps - x0)) ** 2).flatten(1).mean(1))
        image = adapter.decode(x - b * v).float()
        rewards.append((image * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1).mean((1, 2)))
    u = (rewards[0] - rewards[1]).abs()
    m = (s1 <= t_max).float()
    l_rew = (m * torch.exp(-u) * (offset - rewards[0])).sum() / m.sum().clamp(min=1)
    l_reg = reg * (m * u).sum() / m.sum().clamp(min=1)
    return torch.cat(losses).mean() + weight * l_rew + l_reg, m


def test_the_loss_is_the_hand_written_ctrl_u_objective_and_reaches_the_lora():
    adapter, params, *_ = _lora_policy(4)
    x0 = torch.randn(len(PROMPTS), *adapter.latent_shape(), generator=torch.Generator().manual_seed(1))
    algo = _algorithm(**{"ctrl_u.t_max": 0.7})
    loss, metrics = algo.loss(LossContext(adapter, adapter.transformer, None), _unit(adapter, x0), 0)
    want, mask = _hand_written(adapter, x0, t_max=0.7)
    assert 0 < mask.sum() < len(PROMPTS)  # the seed leaves some samples above t_max: the mask is exercised
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-7)
    got_grad = torch.autograd.grad(loss, params, allow_unused=True)
    want_grad = torch.autograd.grad(want, params, allow_unused=True)
    for g, w in zip(got_grad, want_grad, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-8)
    assert any(float(w.abs().max()) > 0 for w in want_grad)
    assert metrics["uncertainty"] >= 0 and metrics["masked_fraction"] == pytest.approx(1 - mask.mean().item())


def test_the_sd3_adapter_encodes_images_to_the_latents_it_decodes():
    from genrl.models.sd3 import SD3Adapter
    from genrl.toy.pipeline import load_toy_pipeline
    from rewards.references import ReferenceImages

    adapter = SD3Adapter(load_toy_pipeline(), max_sequence_length=0)
    scenes = ReferenceImages("toy", per_prompt=1, heldout=0).sample(PROMPTS)
    latents = adapter.encode_images(scenes)
    assert latents.shape == (len(PROMPTS), *adapter.latent_shape())
    with torch.no_grad():
        back = adapter.decode(latents).float()
    mse = ((back - scenes) ** 2).mean().item()
    assert 10 * torch.log10(torch.tensor(1.0 / mse)) > 25  # the shipped VAE reconstructs renders at ~33 dB


def test_the_reward_weight_ramps_linearly_over_epochs():
    assert [reward_weight(e, 4, 0.5) for e in (0, 2, 4, 9)] == [0.0, 0.25, 0.5, 0.5]
    assert reward_weight(0, 0, 2.0) == 2.0


def test_bad_ctrl_u_configs_are_refused_by_key(tmp_path):
    base = tiny_overrides(tmp_path, **{"sample.same_latent": False, "sample.noise_level": 0.0})
    for bad, key in (("ctrl_u.t_max=0", "ctrl_u.t_max"), ("ctrl_u.step=2", "ctrl_u.step"),
                     ("ctrl_u.reg=-1", "ctrl_u.reg"), ("sample.same_latent=true", "same_latent")):
        with pytest.raises(ConfigError, match=key):
            load_config(CONFIGS / "toy_ctrl_u.yaml", [*base, bad])
    cfg = load_config(CONFIGS / "toy_ctrl_u.yaml", [*base, "reward.weights={toy_verifier: 1.0}",
                                                    "reward.options={toy_verifier: {mode: partial}}"])
    with pytest.raises(ConfigError, match=r"reward\.weights\.toy_verifier.*not differentiable"):
        Trainer(cfg)


@pytest.mark.timeout(600)
def test_a_short_toy_run_raises_its_differentiable_reward(tmp_path):
    """Darkness (brightness with sign -1; the renders are mostly white) on one-step predictions of the toy world's
    rendered scenes: the images the model then *samples* for the held-out prompts are darker than before."""
    dark = {"reward.weights": "{brightness: 1.0}", "reward.options": "{brightness: {sign: -1.0}}",
            "reward.eval": "{dark: {name: brightness, sign: -1.0}}", "ctrl_u.reward_offset": 0.0}
    trainer = Trainer(load_config(CONFIGS / "toy_ctrl_u.yaml", tiny_overrides(
        tmp_path, **dark, **{"epochs": 8, "sample.batch_size": 8, "sample.noise_level": 0.0,
                             "sample.same_latent": False, "train.learning_rate": 1e-2, "ctrl_u.t_max": 1.0,
                             "log.eval_every": 0, "log.save_every": 0, "log.export_merged": "false"})))
    trainer.train()
    records = trainer.metrics_log.records()
    before, after = records[0]["eval/dark"], records[-1]["eval/dark"]
    assert after > before + 0.01, (before, after)
