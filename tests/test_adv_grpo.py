"""Adv-GRPO: discriminator rewards (DINO-style hinge head, PickScore pairwise), schedule, trainer hook, resume."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_models import save_tiny_clip
from test_trainer import CONFIGS, make_trainer

from genrl.algorithms.adv_grpo import discriminator_turn
from genrl.data import load_prompts
from genrl.models.lora import lora_state_dict
from rewards import ReferenceImages, build_reward
from rewards.adversarial import hinge_loss, pairwise_loss


@pytest.fixture(scope="module")
def train_set():
    return load_prompts("toy:train")


def _noise(n, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _dino(**options):
    return build_reward("dino_adversarial", backbone="toy", num_patches=0, **options)


def test_hinge_loss_is_zero_beyond_the_margins_and_linear_inside():
    assert hinge_loss(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -2.5])).item() == 0.0
    h_ref, h_gen = torch.tensor([0.5, 2.0]), torch.tensor([0.0, -4.0])
    expected = 0.5 * ((0.5 + 0.0) / 2 + (1.0 + 0.0) / 2)
    assert hinge_loss(h_ref, h_gen).item() == pytest.approx(expected)


def test_pairwise_loss_is_softplus_of_the_score_difference():
    s_ref, s_gen = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.3, 0.5, -1.0])
    expected = torch.log1p(torch.exp(s_gen - s_ref)).mean()
    torch.testing.assert_close(pairwise_loss(s_ref, s_gen), expected)
    assert pairwise_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))


def test_schedule_gives_floor_epochs_over_d_times_generator_epochs():
    for d_times in (1, 2, 3, 10):
        for epochs in (1, 9, 10, 25):
            generator = sum(not discriminator_turn("d_times", e, d_times) for e in range(epochs))
            assert generator == epochs // d_times
    assert discriminator_turn("gate", 0, 10, gen_mean=0.6, ref_mean=0.5)
    assert not discriminator_turn("gate", 0, 10, gen_mean=0.5, ref_mean=0.5)
    assert not discriminator_turn("gate", 0, 10, gen_mean=0.4, ref_mean=0.5)
    with pytest.raises(ValueError, match="gate"):
        discriminator_turn("gate", 0, 10)


def test_dino_reward_ignores_the_prompt_and_is_batch_invariant():
    reward = _dino()
    images = _noise(4)
    a = reward(images, ["a circle"] * 4).scores
    b = reward(images, ["two red squares", "x", "y", "z"]).scores
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.cat([reward(images[:1], ["a"]).scores, reward(images[1:], ["a"] * 3).scores]), a)


def test_dino_reward_and_loss_use_the_same_normalised_features(train_set):
    reward = _dino(patch_weight=0.3, cls_weight=0.7)
    refs = ReferenceImages("toy", per_prompt=2, heldout=0).sample(train_set.prompts[:3], train_set.metadata[:3])
    gens = _noise(3)
    cls, patches = reward.backbone(gens)
    cls_n, patches_n = F.normalize(cls, dim=-1), F.normalize(patches, dim=-1)
    with torch.no_grad():
        expected = 0.7 * reward.head(cls_n) + 0.3 * reward.head(patches_n).mean(-1)
    torch.testing.assert_close(reward(gens, ["p"] * 3).scores, expected)
    # the discriminator is trained on exactly those features (the released code trained on raw ones)
    rc, rp = (F.normalize(t, dim=-1) for t in reward.backbone(refs))
    with torch.no_grad():
        closed = hinge_loss(reward.head(rc), reward.head(cls_n)) + 0.3 * hinge_loss(reward.head(rp),
                                                                                   reward.head(patches_n))
        loss, _ = reward.discriminator_loss(refs, gens, ["p"] * 3)
    torch.testing.assert_close(loss, closed)


def test_discriminator_steps_separate_references_from_noise_and_leave_the_backbone(train_set):
    reward = _dino(lr=1e-3)
    backbone = {k: v.clone() for k, v in reward.backbone.state_dict().items()}
    prompts = train_set.prompts[:16]
    refs = ReferenceImages("toy", per_prompt=4, heldout=1).sample(prompts, train_set.metadata[:16])
    heldout = ReferenceImages("toy", per_prompt=4, heldout=1).sample_heldout(prompts, train_set.metadata[:16])
    gens = _noise(16)
    losses = [reward.update(refs, gens, prompts)["loss"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert reward.accuracy(heldout, _noise(16, seed=1), prompts) >= 0.9  # unseen images of both kinds
    assert all(torch.equal(v, backbone[k]) for k, v in reward.backbone.state_dict().items())
    assert not any(p.requires_grad for p in reward.head.parameters())  # frozen again between updates
    assert not reward.head.training and reward.steps == 30


def test_references_are_paired_deterministic_and_hold_some_out(train_set, tmp_path):
    refs = ReferenceImages("toy", per_prompt=3, heldout=1, seed=5)
    prompt, meta = train_set.prompts[0], train_set.metadata[0]
    every = refs.all_for(prompt, meta)
    assert every.shape == (3, 3, 32, 32) and every.dtype == torch.uint8
    torch.testing.assert_close(ReferenceImages("toy", per_prompt=3, seed=5).all_for(prompt, meta), every)
    for seed in range(8):  # training draws never return the held-out (last) reference
        g = torch.Generator().manual_seed(seed)
        drawn = (refs.sample([prompt], [meta], g)[0] * 255).round().to(torch.uint8)
        assert not torch.equal(drawn, every[2]) and any(torch.equal(drawn, every[i]) for i in range(2))
        torch.testing.assert_close(refs.sample_heldout([prompt], [meta], g)[0], every[2].float() / 255)
    # a folder with metadata.jsonl is paired; a missing prompt is named
    from PIL import Image

    for i in range(2):
        Image.fromarray(every[i].permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    (tmp_path / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file": f"{i}.png", "prompt": prompt}) for i in range(2)) + "\n")
    folder = ReferenceImages(str(tmp_path), per_prompt=2, heldout=1)
    assert folder.paired and torch.equal(folder.all_for(prompt), every[:2])
    with pytest.raises(KeyError, match="a prompt nobody wrote"):
        folder.sample(["a prompt nobody wrote"])
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        ReferenceImages(str(tmp_path / "no_such_dir"))


def test_pickscore_adversarial_tunes_only_its_last_block_with_the_pairwise_loss(tmp_path, train_set):
    save_tiny_clip(tmp_path / "m", tmp_path / "p", vision_layers=3)
    model, processor = str(tmp_path / "m"), str(tmp_path / "p")
    reward = build_reward("pickscore_adversarial", model=model, processor=processor, tune_layers=1, lr=1e-3)
    prompts = train_set.prompts[:6]
    refs = ReferenceImages("toy", per_prompt=2, heldout=0).sample(prompts, train_set.metadata[:6])
    gens = _noise(6)
    s_ref, s_gen = reward(refs, prompts).scores, reward(gens, prompts).scores
    loss, _ = reward.discriminator_loss(refs, gens, prompts)
    torch.testing.assert_close(loss.detach(), F.softplus(s_gen - s_ref).mean(), rtol=1e-5, atol=1e-6)
    before = {k: v.clone() for k, v in reward.model.state_dict().items()}
    losses = [reward.update(refs, gens, prompts)["loss"] for _ in range(10)]
    assert losses[-1] < losses[0]
    changed = {k for k, v in reward.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("vision_model.encoder.layers.2.") for k in changed)
    assert not any(p.requires_grad for p in reward.model.parameters())
    with pytest.raises(ValueError, match="tune_layers"):
        build_reward("pickscore_adversarial", model=model, processor=processor, tune_layers=4)


def _lora(trainer):
    return {k: v.detach().clone() for k, v in lora_state_dict(trainer.unwrapped).items()}


def _disc_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.algorithm.reward.trainable_parameters().items()}


def test_adv_grpo_alternates_discriminator_and_generator_epochs(tmp_path):
    trainer = make_trainer(tmp_path, config=CONFIGS / "toy_adv_dino.yaml", **{
        "epochs": 2, "adv.d_times": 2, "adv.references_per_prompt": 2, "sample.window_size": 2,
        "sample.window_range": "[0,2]", "log.save_every": 0, "log.export_merged": False})
    algo = trainer.algorithm
    for epoch in range(2):
        lora_before, disc_before = _lora(trainer), _disc_state(trainer)
        batches = [trainer.rollouts.sample_batch(epoch, 0, next(iter(trainer.sampler)))]
        trainer.state.epoch = epoch
        trainer.score_epoch(batches)
        update, metrics = algo.generator_update(trainer, batches)
        if update:
            trainer.optimize_epoch(batches)
        lora_after, disc_after = _lora(trainer), _disc_state(trainer)
        lora_moved = any(not torch.equal(lora_before[k], lora_after[k]) for k in lora_before)
        disc_moved = any(not torch.equal(disc_before[k], disc_after[k]) for k in disc_before)
        assert update == (epoch % 2 == 1)
        assert lora_moved == update and disc_moved == (not update)  # exactly one side learns per epoch
        assert {"adv/reward_gap", "adv/heldout_accuracy"} <= set(metrics)
    assert (algo.discriminator_steps, algo.generator_epochs) == (1, 1)


def test_adv_grpo_needs_an_adversarial_reward(tmp_path):
    with pytest.raises(ValueError, match="dino_adversarial"):
        make_trainer(tmp_path, config=CONFIGS / "toy_adv_dino.yaml",
                     **{"reward.weights": "{toy_verifier: 1.0}", "reward.options": "{}"})


def test_resume_restores_the_discriminator_exactly(tmp_path):
    extra = {"epochs": 2, "adv.d_times": 2, "adv.references_per_prompt": 2, "log.save_every": 1,
             "log.export_merged": False}
    first = make_trainer(tmp_path, config=CONFIGS / "toy_adv_dino.yaml", **extra)
    first.train()
    weights, optimizer = _disc_state(first), first.algorithm.reward.optimizer.state_dict()
    assert first.algorithm.reward.steps == 1 and first.algorithm.generator_epochs == 1
    resumed = make_trainer(tmp_path, config=CONFIGS / "toy_adv_dino.yaml", **{**extra, "resume": "latest"})
    before = _disc_state(resumed)
    assert any(not torch.equal(before[k], weights[k]) for k in weights)  # a fresh head differs ...
    resumed._resume()
    after = _disc_state(resumed)
    assert all(torch.equal(after[k], weights[k]) for k in weights)  # ... until the checkpoint is loaded
    restored = resumed.algorithm.reward.optimizer.state_dict()
    assert all(torch.equal(restored["state"][i]["exp_avg"], optimizer["state"][i]["exp_avg"])
               for i in optimizer["state"])
    assert (resumed.algorithm.reward.steps, resumed.algorithm.discriminator_steps,
            resumed.algorithm.generator_epochs) == (1, 1, 1)
