import json
import random

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from genrl.toy import pretrain as pretrain_module
from genrl.toy.pipeline import load_toy_pipeline
from genrl.toy.pretrain import (
    PretrainConfig,
    PretrainError,
    in_reading_order,
    noisy_caption,
    pretrain,
    resume_dir,
)
from rewards.toyworld.prompts import all_specs, spec_from_prompt
from rewards.toyworld.render import RELATION_MIN_OFFSET, render
from rewards.toyworld.verifier import verify

TINY = dict(vae_steps=4, vae_batch_size=4, steps=4, batch_size=4, warmup_steps=1, eval_every=0,
            final_eval_images_per_prompt=0, checkpoint_every=2, device="cpu", null_t5_steps=4, null_t5_batch_size=4,
            null_t5_max_tokens=8)


def _weights(path):
    pipe = load_toy_pipeline(path)
    return {f"{name}.{k}": v for name in ("transformer", "vae", "text_encoder")
            for k, v in getattr(pipe, name).state_dict().items()}


def test_pretraining_is_reproducible_and_saves_a_loadable_pipeline(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pretrain(PretrainConfig(out_dir=str(a), **TINY), log_path=tmp_path / "a.jsonl")
    pretrain(PretrainConfig(out_dir=str(b), **TINY))
    pa = StableDiffusion3Pipeline.from_pretrained(a, local_files_only=True)  # the stock loader, as it is
    pb = load_toy_pipeline(b)
    for (name, x), (_, y) in zip(pa.transformer.state_dict().items(), pb.transformer.state_dict().items()):
        assert torch.equal(x, y), name
    assert pa.vae.config.scaling_factor == pb.vae.config.scaling_factor != 1.0
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records][:1] == ["config"] and records[-1]["stage"] == "final"
    assert not (tmp_path / "a.tmp").exists()  # written atomically, no leftovers
    assert not resume_dir(a).exists()  # a finished run leaves nothing to resume


@pytest.mark.parametrize("stage, step", [("vae", 2), ("denoiser", 2), ("null_t5", 0), ("null_t5", 2)])
def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, stage, step):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain(PretrainConfig(out_dir=str(straight), **TINY), log_path=tmp_path / "straight.jsonl")

    restore = _interrupt_after(monkeypatch, stage, step)
    with pytest.raises(KeyboardInterrupt):
        pretrain(PretrainConfig(out_dir=str(resumed), **TINY), log_path=tmp_path / "resumed.jsonl")
    assert (resume_dir(resumed) / "state.pt").is_file() and not resumed.exists()
    restore()
    pretrain(PretrainConfig(out_dir=str(resumed), **TINY), log_path=tmp_path / "resumed.jsonl")

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "resumed.jsonl").read_text().splitlines()]
    stages = [r["stage"] for r in log]
    assert stages.count("config") == stages.count("resume") == stages.count("vae_done") == 1
    assert stages[-1] == "final"
    straight_log = [json.loads(line) for line in (tmp_path / "straight.jsonl").read_text().splitlines()]
    # the same training records, none repeated by the resumption
    train = [(r["stage"], r["step"], r["loss"]) for r in log if "loss" in r]
    assert train == [(r["stage"], r["step"], r["loss"]) for r in straight_log if "loss" in r]


def _interrupt_after(monkeypatch, stage, step):
    """Make pretraining die right after it writes the checkpoint of (stage, step)."""
    original = pretrain_module._Run.save_state

    def save_then_die(self, stage_, step_, opt, ema, teacher=None):
        original(self, stage_, step_, opt, ema, teacher)
        if (stage_, step_) == (stage, step):
            raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module._Run, "save_state", save_then_die)
    return lambda: monkeypatch.setattr(pretrain_module._Run, "save_state", original)


def test_resuming_with_other_settings_is_refused_by_name(tmp_path, monkeypatch):
    vae_cut, denoiser_cut = tmp_path / "vae_cut", tmp_path / "denoiser_cut"
    for out, stage in ((vae_cut, "vae"), (denoiser_cut, "denoiser")):
        restore = _interrupt_after(monkeypatch, stage, 2)
        with pytest.raises(KeyboardInterrupt):
            pretrain(PretrainConfig(out_dir=str(out), **TINY))
        restore()
    with pytest.raises(PretrainError, match=r"other settings \(lr\).*fresh=true"):
        pretrain(PretrainConfig(out_dir=str(denoiser_cut), **{**TINY, "lr": 1e-3}))
    with pytest.raises(PretrainError, match=r"other settings \(vae_lr\)"):
        pretrain(PretrainConfig(out_dir=str(vae_cut), **{**TINY, "vae_lr": 1e-2}))
    # the denoiser's settings are free while it has not started; execution settings always are
    pretrain(PretrainConfig(out_dir=str(vae_cut), **{**TINY, "lr": 1e-3, "steps": 3, "threads": 1}))
    # fresh=true starts over
    pretrain(PretrainConfig(out_dir=str(denoiser_cut), **{**TINY, "lr": 1e-3, "fresh": True}))
    assert (vae_cut / "model_index.json").is_file() and (denoiser_cut / "model_index.json").is_file()


def test_the_null_t5_stage_makes_zero_t5_tokens_change_the_velocity_less(tmp_path):
    """30 distillation steps from a random toy pipeline shrink the effect of 64 zero T5 tokens on its velocity."""
    from genrl.toy.pipeline import build_toy_pipeline

    build_toy_pipeline(seed=5).save_pretrained(tmp_path / "random")
    pretrain(PretrainConfig(out_dir=str(tmp_path / "null"), **dict(
        TINY, init_from=str(tmp_path / "random"), steps=0, null_t5_steps=30, null_t5_batch_size=8,
        null_t5_max_tokens=64, null_t5_lr=1e-3, checkpoint_every=0)))

    def gap(path):  # relative change of the velocity when the null T5's 64 tokens follow the text tokens
        pipe = load_toy_pipeline(path)
        embeds, _, pooled, _ = pipe.encode_prompt(["a photo of a red circle"] * 4, None, None,
                                                  do_classifier_free_guidance=False, max_sequence_length=64)
        assert embeds.shape[1] == 16 + 64 and not embeds[:, 16:].any()  # the null T5's tokens are zeros
        x, t = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.full((4,), 700.0)
        with torch.no_grad():
            out = [pipe.transformer(x, e, pooled, t, return_dict=False)[0] for e in (embeds[:, :16], embeds)]
        return float((out[1] - out[0]).norm() / out[0].norm())

    before, after = gap(tmp_path / "random"), gap(tmp_path / "null")
    assert after < 0.5 * before, (before, after)


def test_a_damaged_state_file_is_named(tmp_path):
    out = tmp_path / "run"
    resume_dir(out).mkdir()
    (resume_dir(out) / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainError, match=r"state\.pt.*fresh=true"):
        pretrain(PretrainConfig(out_dir=str(out), **TINY))


def test_bad_settings_are_one_line_errors():
    with pytest.raises(PretrainError, match="caption_noise"):
        PretrainConfig(caption_noise=1.5)
    with pytest.raises(PretrainError, match="checkpoint_every"):
        PretrainConfig(checkpoint_every=-1)
    with pytest.raises(PretrainError, match="unknown family 'colour_attr'"):
        PretrainConfig(family_weights={"colour_attr": 2.0})
    with pytest.raises(PretrainError, match="family_weights must be >= 0"):
        PretrainConfig(family_weights={"position": -1.0})


def test_family_weights_set_the_share_of_each_family_and_uniform_stays_the_shipped_draw():
    from rewards.toyworld.prompts import pretraining_specs, sample_specs

    specs = pretraining_specs()
    drawn = sample_specs(specs, 3000, random.Random(1), {"color_attr": 5.0, "single_object": 0.0})
    share = {f: sum(s.family == f for s in drawn) / len(drawn) for f in ("color_attr", "single_object", "position")}
    # weights 5, 0 and 1 for the other four: 5/9, 0 and 1/9
    assert share["color_attr"] == pytest.approx(5 / 9, abs=0.03) and share["single_object"] == 0
    assert share["position"] == pytest.approx(1 / 9, abs=0.02)
    assert sample_specs(specs, 50, random.Random(2), {}) == sample_specs(specs, 50, random.Random(2))


def test_caption_noise_per_family_rates_and_misnamed_objects():
    rng = random.Random(0)
    specs = all_specs()
    rates = {"two_object": 0.4, "position": 0.1}
    for spec in specs["two_object"]:
        captions = [noisy_caption(spec, rng, rates) for _ in range(400)]
        wrong = [spec_from_prompt(c) for c in captions if c != spec.prompt]
        assert abs(len(wrong) / len(captions) - 0.4) < 0.08
        for other in wrong:  # exactly one object renamed, to a shape the scene does not hold
            assert other.family == "two_object"
            kept = [a.shape == b.shape for a, b in zip(other.objects, spec.objects)]
            assert sorted(kept) == [False, True]
            renamed = other.objects[kept.index(False)].shape
            assert renamed not in {o.shape for o in spec.objects}
    position = specs["position"][0]
    assert abs(sum(noisy_caption(position, rng, rates) != position.prompt for _ in range(2000)) / 2000 - 0.1) < 0.03
    for family in ("color_attr", "counting", "single_object", "colors"):  # families the mapping leaves out stay exact
        assert all(noisy_caption(spec, rng, rates) == spec.prompt for spec in specs[family][:5] for _ in range(20))
    with pytest.raises(PretrainError, match="single_object"):
        PretrainConfig(caption_noise={"single_object": 0.2})
    with pytest.raises(PretrainError, match="position"):
        PretrainConfig(caption_noise={"position": 1.2})


def test_reading_order_lays_the_first_named_object_out_left():
    rng = random.Random(3)
    for spec in all_specs()["color_attr"][:30] + all_specs()["two_object"]:
        image, objects = render(in_reading_order(spec), rng)
        assert [o.shape for o in objects] == [o.shape for o in spec.objects]
        assert objects[0].center[0] + RELATION_MIN_OFFSET <= objects[1].center[0]
        assert verify(image, spec).strict  # still a scene of the prompt
    with pytest.raises(PretrainError, match="reading_order"):
        PretrainConfig(reading_order=-0.1)


def test_caption_noise_makes_the_stated_errors_at_the_stated_rate():
    rng = random.Random(0)
    specs = all_specs()
    for family in ("position", "color_attr", "counting"):
        for spec in specs[family][:6]:
            captions = [noisy_caption(spec, rng, 0.3) for _ in range(2000)]
            wrong = [c for c in captions if c != spec.prompt]
            assert abs(len(wrong) / len(captions) - 0.3) < 0.05
            other = spec_from_prompt(wrong[0])  # a real prompt of the same family
            assert other.family == family
            if family == "position":
                assert other.objects == spec.objects and other.relation != spec.relation
                assert {spec.relation, other.relation} in ({"left of", "right of"}, {"above", "below"})
            elif family == "color_attr":
                assert [o.shape for o in other.objects] == [o.shape for o in spec.objects]
                assert [o.color for o in other.objects] == [o.color for o in reversed(spec.objects)]
            else:
                assert other.objects[0].shape == spec.objects[0].shape
                assert {other.objects[0].count, spec.objects[0].count} == {2, 3}
    for family in ("single_object", "two_object", "colors"):  # what every prompt builds on stays exact
        for spec in specs[family]:
            assert all(noisy_caption(spec, rng, 1.0) == spec.prompt for _ in range(20))
