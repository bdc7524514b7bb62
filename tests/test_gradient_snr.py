"""bench/gradient_snr.py: the signal-to-noise estimate of an epoch's policy gradient."""

import importlib.util

import pytest
import torch
from test_trainer import CONFIGS, make_trainer

_spec = importlib.util.spec_from_file_location("gradient_snr", CONFIGS.parent / "bench" / "gradient_snr.py")
gradient_snr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gradient_snr)


def test_estimates_recover_a_known_signal_and_noise():
    g = torch.Generator().manual_seed(0)
    dim, noise_power = 20_000, 9.0
    signal = torch.randn(dim, generator=g)
    signal /= signal.norm()  # |s|^2 = 1
    grads = signal + torch.randn(30, dim, generator=g) * (noise_power / dim) ** 0.5
    r = gradient_snr.signal_to_noise(grads, images_per_epoch=32)
    assert r["signal"] == pytest.approx(1.0, abs=4 * r["signal_se"]) and r["signal_se"] < 0.05
    assert r["noise"] == pytest.approx(noise_power, rel=0.05)
    assert r["resolved"] and r["images_for_snr_1"] == pytest.approx(32 * noise_power, rel=0.1)


def test_pure_noise_is_not_resolved_and_gives_only_a_bound():
    grads = torch.randn(20, 5_000, generator=torch.Generator().manual_seed(1))
    r = gradient_snr.signal_to_noise(grads, images_per_epoch=16)
    assert not r["resolved"] and r["images_for_snr_1"] != r["images_for_snr_1"]  # NaN
    assert r["images_for_snr_1_at_least"] > 16 * 10  # the bound says: far more images than we have
    with pytest.raises(ValueError, match="two epochs"):
        gradient_snr.signal_to_noise(grads[:1], images_per_epoch=16)


def test_epoch_gradient_is_the_trainers_and_leaves_weights_untouched(tmp_path):
    trainer = make_trainer(tmp_path, **{"reward.weights": "{ink_balance: 1.0}", "reward.options": "{}"})
    before = [p.detach().clone() for p in trainer.models.params]
    grad, images = gradient_snr.epoch_gradient(trainer, epoch=0)
    assert images == trainer.cfg.sample.batch_size * trainer.cfg.sample.num_batches_per_epoch
    assert grad.shape == (sum(p.numel() for p in trainer.models.params),) and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0  # LoRA B starts at 0, but its gradient does not
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.models.params, strict=True))
    assert all(p.grad is None for p in trainer.models.params)
