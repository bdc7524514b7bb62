"""DRAGON: demonstrations (paired, unpaired, set rewards by leave-one-out and greedy selection), the DPO and KTO
losses' invariants, the shared time and noise of policy and reference on the trainer, and a short toy run."""

import pytest
import torch
from test_trainer import CONFIGS, tiny_overrides

from genrl.algorithms.dragon import (
    dpo_loss,
    greedy_positive_set,
    kto_loss,
    leave_one_out_labels,
    paired_demonstrations,
    unpaired_demonstrations,
)
from genrl.config import ConfigError, load_config
from genrl.trainer import Trainer
from rewards.distributional import vendi_score


def test_paired_demonstrations_share_a_prompt_and_order_by_reward():
    rewards = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.3, float("nan"), 0.7, 0.2])
    ids = [0, 0, 0, 1, 1, 2, 2, 3]  # group 1 has no spread, group 2 one finite reward, group 3 one sample
    pairs = paired_demonstrations(rewards, ids)
    assert pairs == [(1, 0)]
    assert all(ids[w] == ids[l] and rewards[w] > rewards[l] for w, l in pairs)


def test_unpaired_and_set_demonstrations_are_disjoint_and_ordered():
    rewards = torch.tensor([0.2, 0.8, 0.5, 0.9, 0.1, float("nan")])
    labels = unpaired_demonstrations(rewards)
    assert labels.tolist() == [-1, 1, 0, 1, -1, 0]  # the median (0.5) and the NaN are left out
    emb = torch.cat([torch.eye(4), torch.eye(4)[:2] + 0.01])  # two near-duplicates add little diversity
    set_reward = vendi_score
    for labels in (leave_one_out_labels(set_reward, emb), greedy_positive_set(set_reward, emb, size=4)):
        plus, minus = emb[labels == 1], emb[labels == -1]
        assert len(plus) and len(minus) and len(plus) + len(minus) <= len(emb)
        assert set_reward(plus) >= set_reward(minus)
    assert greedy_positive_set(set_reward, emb, size=4)[:4].tolist() == [1, 1, 1, 1]  # the four distinct ones
    with pytest.raises(ValueError, match="size must be in"):
        greedy_positive_set(set_reward, emb, size=6)


def test_the_preference_losses_at_the_reference_and_under_a_swap():
    e = torch.tensor([0.3, 1.2])
    assert torch.allclose(dpo_loss(e, e, e.flip(0), e.flip(0), beta=100.0), torch.log(torch.tensor(2.0)))
    w, rw, l, rl = torch.tensor([0.2]), torch.tensor([0.5]), torch.tensor([0.9]), torch.tensor([0.4])
    logit = -0.5 * 10.0 * ((w - rw) - (l - rl))  # the winner improved on the reference more than the loser did
    assert torch.allclose(dpo_loss(w, rw, l, rl, 10.0), -torch.nn.functional.logsigmoid(logit))
    assert torch.allclose(dpo_loss(l, rl, w, rw, 10.0), -torch.nn.functional.logsigmoid(-logit))  # swap flips it
    assert dpo_loss(w, rw, l, rl, 10.0) < dpo_loss(l, rl, w, rw, 10.0)
    labels = torch.tensor([1, -1, 0])
    at_ref = kto_loss(torch.ones(3), torch.ones(3), labels, beta=5.0)
    assert at_ref.tolist() == [0.5, 0.5, 0.0]
    better = kto_loss(torch.tensor([0.5, 0.5]), torch.ones(2), torch.tensor([1, -1]), beta=5.0)
    assert better[0] < 0.5 < better[1]  # a lower error is rewarded on D+ and penalised on D-


def _dragon_overrides(tmp_path, **extra):
    return tiny_overrides(tmp_path, **{"sample.batch_size": 8, "sample.group_size": 4, "sample.same_latent": False,
                                       **extra})


@pytest.mark.parametrize("demonstrations", ["paired", "unpaired"])
def test_at_the_reference_policy_and_reference_share_time_and_noise(tmp_path, demonstrations):
    trainer = Trainer(load_config(CONFIGS / "toy_dragon.yaml", _dragon_overrides(
        tmp_path, **{"dragon.demonstrations": demonstrations})))
    batches = trainer.sample_epoch(0)
    trainer.score_epoch(batches)
    units, stats = trainer.algorithm.preference_batches(trainer, batches, 0)
    assert units and stats["dragon/demonstrations"] >= len(units)
    from genrl.algorithms import LossContext

    ctx = LossContext(trainer.adapter, trainer.models.model, trainer.models.reference)
    loss, metrics = trainer.algorithm.loss(ctx, units[0], 0)
    # LoRA B = 0: the policy is the reference, so with a shared time and noise the error difference is 0 exactly
    assert metrics["error_delta"] == 0.0
    expected = torch.log(torch.tensor(2.0)) if demonstrations == "paired" else 0.5 * units[0].extras["labels"].ne(0).float().mean()
    assert loss.item() == pytest.approx(float(expected), abs=1e-6)
    if demonstrations == "paired":  # winners first, then their losers: each pair one prompt
        n = len(units[0].prompts) // 2
        assert units[0].prompts[:n] == units[0].prompts[n:]


def test_same_latent_is_refused_for_dragon(tmp_path):
    with pytest.raises(ConfigError, match="same_latent=true makes every image of a group identical"):
        load_config(CONFIGS / "toy_dragon.yaml", _dragon_overrides(tmp_path, **{"sample.same_latent": True}))


def test_a_short_dragon_run_raises_the_held_out_reward(tmp_path):
    dark = {"reward.weights": "{brightness: 1.0}", "reward.options": "{brightness: {sign: -1.0}}",
            "reward.eval": "{dark: {name: brightness, sign: -1.0}}"}
    overrides = _dragon_overrides(tmp_path, **dark, **{"epochs": 6, "train.learning_rate": 1e-2, "log.eval_every": 0,
                                                      "log.save_every": 0, "log.export_merged": "false"})
    trainer = Trainer(load_config(CONFIGS / "toy_dragon.yaml", overrides))
    trainer.train()
    records = trainer.metrics_log.records()
    before, after = records[0]["eval/dark"], records[-1]["eval/dark"]
    assert after > before + 0.01, (before, after)  # 1e-2: 3e-3 moved it by +0.007 in 6 epochs of 2 pairs
