"""DiffusionNFT: the loss against its closed form, its invariants, the old adapter and resume."""

import pytest
import torch
from safetensors.torch import load_file

from genrl.algorithms.diffusion_nft import (
    OLD_ADAPTER,
    implicit_policies,
    nft_loss,
    old_decay,
    optimality_probability,
)
from genrl.models.lora import (
    ReferencePolicy,
    adapter_active,
    add_lora,
    add_second_adapter,
    lora_config,
    update_adapter_ema,
)
from genrl.models.sd3 import SD3Adapter
from genrl.toy.pipeline import build_toy_pipeline


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_implicit_policies_are_mirrored_around_the_old_policy():
    v, v_old = _rand(3, 4, 8, 8, seed=1), _rand(3, 4, 8, 8, seed=2)
    for beta in (0.1, 1.0, 2.5):
        pos, neg = implicit_policies(v, v_old, beta)
        torch.testing.assert_close((pos + neg) / 2, v_old)


def test_optimality_probability_maps_clipped_advantages_linearly():
    a = torch.tensor([-9.0, -5.0, -2.5, 0.0, 2.5, 5.0, 7.0])
    torch.testing.assert_close(optimality_probability(a), torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]))


def test_loss_equals_its_closed_form():
    x0, noise, v, v_old = (_rand(4, 4, 8, 8, seed=s) for s in range(4))
    t = torch.tensor([0.9, 0.5, 0.3, 0.1])
    r = torch.tensor([0.0, 0.3, 0.5, 1.0])
    x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
    beta = 0.7
    got = nft_loss(v, v_old, x_t, x0, t, r, beta)
    expected = []
    for i in range(4):  # one sample at a time, written out
        vp = beta * v[i] + (1 - beta) * v_old[i]
        vn = (1 + beta) * v_old[i] - beta * v[i]
        ep, en = x_t[i] - t[i] * vp - x0[i], x_t[i] - t[i] * vn - x0[i]
        lp = (ep**2).mean() / max(ep.abs().mean().item(), 1e-5)
        ln = (en**2).mean() / max(en.abs().mean().item(), 1e-5)
        expected.append(5 * (r[i] * lp + (1 - r[i]) * ln) / beta)
    torch.testing.assert_close(got, torch.stack(expected))


def test_loss_does_not_depend_on_r_when_the_policy_equals_the_old_one():
    x0, x_t, v = (_rand(3, 4, 8, 8, seed=s) for s in (5, 6, 7))
    t = torch.tensor([0.8, 0.4, 0.2])
    a = nft_loss(v, v.clone(), x_t, x0, t, torch.zeros(3), 1.0)
    b = nft_loss(v, v.clone(), x_t, x0, t, torch.ones(3), 1.0)
    torch.testing.assert_close(a, b)


def test_adaptive_weights_carry_no_gradient():
    x0, x_t, v_old = (_rand(2, 4, 8, 8, seed=s) for s in (8, 9, 10))
    v = _rand(2, 4, 8, 8, seed=11).requires_grad_(True)
    t, r, beta = torch.tensor([0.7, 0.3]), torch.tensor([0.2, 0.9]), 1.0
    nft_loss(v, v_old, x_t, x0, t, r, beta).sum().backward()
    # independent gradient with the weights as constants: d/dv of c * mean((x_t - t v± - x0)^2)
    with torch.no_grad():
        vp, vn = implicit_policies(v, v_old, beta)
        tb = t.view(-1, 1, 1, 1)
        ep, en = x_t - tb * vp - x0, x_t - tb * vn - x0
        n = ep[0].numel()
        wp, wn = ep.abs().mean((1, 2, 3)).view(-1, 1, 1, 1), en.abs().mean((1, 2, 3)).view(-1, 1, 1, 1)
        rb = r.view(-1, 1, 1, 1)
        grad = 5 / beta * (rb * 2 * ep * (-tb * beta) / (n * wp) + (1 - rb) * 2 * en * (tb * beta) / (n * wn))
    torch.testing.assert_close(v.grad, grad)


def test_old_decay_schedules():
    assert [old_decay(s, 1) for s in (0, 250, 500, 1000)] == [0.0, 0.25, 0.5, 0.5]
    assert old_decay(74, 2) == 0.0 and old_decay(75, 2) == 0.0
    assert old_decay(175, 2) == pytest.approx(0.75) and old_decay(10_000, 2) == 0.999


@pytest.fixture()
def two_adapters():
    pipe = build_toy_pipeline(seed=4)
    t = pipe.transformer
    params = add_lora(t, lora_config(4, 8, ["attn.to_q", "attn.to_v"], init="gaussian"))
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    add_second_adapter(t, OLD_ADAPTER)
    return pipe, params


def test_old_adapter_starts_as_a_copy_and_follows_the_ema_exactly(two_adapters):
    pipe, params = two_adapters
    t = pipe.transformer
    named = dict(t.named_parameters())
    assert all(p.requires_grad for p in params) and not any(p.requires_grad for n, p in named.items() if ".old." in n)
    pairs = [(named[n], named[n.replace(".default.", ".old.")]) for n in named if ".default." in n]
    assert all(torch.equal(a, b) for a, b in pairs)
    with torch.no_grad():
        for p in params:
            p.add_(1.0)
    before = [o.clone() for _, o in pairs]
    update_adapter_ema(t, OLD_ADAPTER, decay=0.25)
    for (cur, old), prev in zip(pairs, before, strict=True):
        torch.testing.assert_close(old, 0.25 * prev + 0.75 * cur, rtol=0, atol=1e-6)


def test_reference_is_the_base_model_and_old_adapter_is_switchable(two_adapters):
    pipe, _ = two_adapters
    base = build_toy_pipeline(seed=4)
    adapter, base_adapter = SD3Adapter(pipe, max_sequence_length=0), SD3Adapter(base, max_sequence_length=0)
    cond = base_adapter.encode(["a photo of a red circle"])
    x = _rand(1, *base_adapter.latent_shape(), seed=3)
    expected = base_adapter.velocity(x, 0.5, cond)
    with ReferencePolicy(pipe.transformer).active() as ref:
        torch.testing.assert_close(adapter.velocity(x, 0.5, cond, model=ref), expected)
    trained = adapter.velocity(x, 0.5, cond)
    assert not torch.allclose(trained, expected)
    update_adapter_ema(pipe.transformer, OLD_ADAPTER, decay=1.0)  # keep old as it is
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if ".default." in n:
                p.add_(0.1)
    with adapter_active(pipe.transformer, OLD_ADAPTER):
        torch.testing.assert_close(adapter.velocity(x, 0.5, cond), trained)
    assert not torch.allclose(adapter.velocity(x, 0.5, cond), trained)


def test_nft_trainer_resume_restores_both_adapters(tmp_path):
    from test_trainer import make_trainer

    nft = {"train.algorithm": "diffusion_nft", "train.beta": 1e-4, "sample.group_size": 4,
           "sample.same_latent": "false",  # deterministic rollouts: a shared x_T would repeat one image
           "train.timestep_fraction": 0.75, "reward.weights": "{jpeg_compressibility: 1.0}", "reward.options": "{}"}
    straight = make_trainer(tmp_path / "a", **nft)
    record = straight.train()
    assert "train/nft_loss" in record and record["nft/old_decay"] == pytest.approx(0.001 * 2)
    make_trainer(tmp_path / "b", epochs=1, **nft).train()
    make_trainer(tmp_path / "b", resume="latest", **nft).train()
    for name in ("lora.safetensors", "lora-old.safetensors"):
        a = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "checkpoint-000002" / name))
        b = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "checkpoint-000002" / name))
        assert all(torch.equal(a[k], b[k]) for k in a)
    old = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "checkpoint-000002" / "lora-old.safetensors"))
    cur = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "checkpoint-000002" / "lora.safetensors"))
    assert any(not torch.equal(old[k], cur[k]) for k in cur)  # the old adapter lags the trained one


def test_prompt_banning_needs_both_conditions_and_removes_the_prompt_from_sampling(tmp_path):
    from test_trainer import make_trainer

    trainer = make_trainer(tmp_path, **{"train.algorithm": "diffusion_nft", "sample.same_latent": "false",
                                        "nft.ban_std": 0.05,
                                        "nft.ban_mean": 0.9})
    algo, sampler = trainer.algorithm, trainer.sampler
    rewards = torch.tensor([0.95, 0.96, 0.5, 0.9, 0.95, 0.95, 0.2, 0.1])
    ids = [3, 3, 5, 5, 7, 7, 9, 9]  # 3: solved; 5: high mean but spread; 7: solved; 9: low and flat
    adv = algo.compute_advantages(rewards, ids)
    assert sampler.banned == {3, 7} and adv.stats["banned_prompts"] == 2.0
    for it in range(20):
        assert not {3, 7} & set(sampler.global_layout(it))
    state = sampler.state_dict()
    sampler.load_state_dict({"iteration": 0, "seed": 0})
    assert sampler.banned == set()
    sampler.load_state_dict(state)
    assert sampler.banned == {3, 7}


def test_a_run_whose_prompts_are_all_banned_as_solved_ends_with_its_evaluation_and_export(tmp_path):
    from test_trainer import make_trainer

    from rewards.toyworld.prompts import split

    prompts = tmp_path / "train.txt"
    prompts.write_text("\n".join(s.prompt for s in split("train")[:3]) + "\n")
    # every group counts as solved, so the first epoch bans the 2 prompts it draws and leaves 1 of the 2 needed
    nft = {"train.algorithm": "diffusion_nft", "sample.same_latent": "false", "nft.ban_std": 10.0, "nft.ban_mean": -1.0,
           "epochs": 5, "data.train_prompts": str(prompts)}
    trainer = make_trainer(tmp_path / "a", **nft)
    last = trainer.train()
    assert trainer.state.epoch == 1 and trainer.sampler.drawable() == 1
    assert last["epoch"] == 1 and any(k.startswith("eval/") for k in last)  # the final evaluation ran
    assert (tmp_path / "a" / "run" / "final" / "lora").is_dir()
    resumed = make_trainer(tmp_path / "a", resume="latest", **nft)  # resuming it trains no further epoch
    resumed.train()
    assert resumed.state.epoch == 1
