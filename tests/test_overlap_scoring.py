"""Scoring on a worker thread while the next batch samples (``sample.overlap_scoring``): the same rewards, the
same updates, and a reward's error still stops the epoch with its own message."""

import pytest
import torch
from test_trainer import make_trainer

from genrl.models.lora import lora_state_dict


def _two_epochs(tmp_path, overlap: bool):
    trainer = make_trainer(tmp_path, **{"sample.num_batches_per_epoch": 3, "sample.overlap_scoring": overlap})
    records = [trainer.algorithm.run_epoch(trainer, epoch) for epoch in range(2)]
    return records, lora_state_dict(trainer.unwrapped)


def test_overlapped_scoring_gives_the_same_rewards_and_updates(tmp_path):
    plain, plain_lora = _two_epochs(tmp_path / "plain", overlap=False)
    overlapped, overlapped_lora = _two_epochs(tmp_path / "overlap", overlap=True)
    for a, b in zip(plain, overlapped, strict=True):
        assert a["reward/mean"] == b["reward/mean"] and a["reward/std"] == b["reward/std"]
        assert a["train/policy_loss"] == b["train/policy_loss"]
    assert all(torch.equal(plain_lora[k], overlapped_lora[k]) for k in plain_lora)
    assert any(plain_lora[k].abs().sum() > 0 for k in plain_lora if "lora_B" in k)


def test_a_reward_error_on_the_scoring_thread_is_raised_by_the_epoch(tmp_path):
    trainer = make_trainer(tmp_path, **{"sample.num_batches_per_epoch": 2, "sample.overlap_scoring": True})

    def broken(*args, **kwargs):
        raise ValueError("reward 'toy_verifier' failed on purpose")

    trainer.rewards.reward_fn = broken
    with pytest.raises(ValueError, match="failed on purpose"):
        trainer.sample_epoch(0)
