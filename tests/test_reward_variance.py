"""bench/reward_variance.py: the variance split that says which steps decide a reward."""

import importlib.util

import pytest
from test_trainer import CONFIGS, make_trainer

_spec = importlib.util.spec_from_file_location("reward_variance", CONFIGS.parent / "bench" / "reward_variance.py")
reward_variance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reward_variance)

INK = {"reward.weights": "{ink_balance: 1.0}", "reward.options": "{}"}


def test_windows_parse_and_bad_ones_name_the_schedule():
    assert reward_variance.parse_window("all", 10) == (0, 10)
    assert reward_variance.parse_window("0:2", 10) == (0, 2)
    for bad in ("2:2", "0:11", "a:b"):
        with pytest.raises(SystemExit, match="window"):
            reward_variance.parse_window(bad, 10)


def test_without_step_noise_the_steps_decide_nothing(tmp_path):
    # noise level 0: every rollout from one x_T is the same ODE sample, so all variance is x_T's
    ode_trainer = make_trainer(tmp_path / "a", **INK, **{"sample.noise_level": 0.0, "sample.same_latent": "false"})
    ode = reward_variance.window_variance(ode_trainer, (0, 4), [0, 1], latents=2, seeds=3)
    assert ode["within"] < 1e-12 and ode["total"] > 1e-6 and ode["share"] < 1e-9  # float rounding only
    sde = reward_variance.window_variance(make_trainer(tmp_path / "b", **INK), (0, 4), [0, 1], latents=2, seeds=3)
    assert sde["within"] > 0 and 0 < sde["share"] <= 1.5
