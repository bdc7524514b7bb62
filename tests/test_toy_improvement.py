"""Short end-to-end runs on the toy world must raise a reward (held-out prompts, deterministic sampler)."""

import pytest
from test_trainer import CONFIGS, tiny_overrides

from genrl.config import load_config
from genrl.trainer import Trainer

# darkness (-mean luma): on white toy scenes the policy must draw more, or darker, ink
DARK = {"reward.weights": "{brightness: 1.0}", "reward.options": "{brightness: {sign: -1.0}}",
        "reward.eval": "{dark: {name: brightness, sign: -1.0}}"}


# TP-GRPO: 8 epochs of 6 steps, the first 5 stochastic (its window), one ODE completion per window step
TP = {"epochs": 8, "sample.num_steps": 6, "sample.eval_num_steps": 6, "sample.window_size": 5}


@pytest.mark.parametrize(("config", "lr", "extra"), [("toy.yaml", 1e-2, {}), ("toy_nft.yaml", 3e-3, {}),
                                                     ("toy_tp.yaml", 1e-2, TP)])
def test_a_short_run_raises_the_held_out_reward(tmp_path, config, lr, extra):
    overrides = tiny_overrides(tmp_path, **DARK, **{
        "epochs": 6, "sample.batch_size": 8, "sample.group_size": 4, "sample.num_batches_per_epoch": 1,
        "train.gradient_accumulation_steps": 1, "train.learning_rate": lr, "log.eval_every": 0,
        "log.save_every": 0, "log.export_merged": "false", **extra})
    trainer = Trainer(load_config(CONFIGS / config, overrides))
    trainer.train()
    records = trainer.metrics_log.records()
    before, after = records[0]["eval/dark"], records[-1]["eval/dark"]
    # the same held-out prompts and seeds, deterministic sampler: the trained policy draws darker images
    assert after > before + 0.01, (before, after)
