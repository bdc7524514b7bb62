"""The one trainer on the toy world: on-policy invariants, checkpoints/resume, export, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genrl.algorithms.base import LossContext
from genrl.config import ConfigError, load_config
from genrl.models.lora import ReferencePolicy
from genrl.models.sd3 import t5_tokens_dropped
from genrl.trainer import Trainer
from rewards.toyworld.prompts import split

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ROOT = CONFIGS.parent
SCRIPT = CONFIGS.parent / "scripts" / "train_t2i.py"


def tiny_overrides(tmp_path, **extra) -> list[str]:
    """A few-second toy run: 4 sampling steps, groups of 2, four test prompts."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    test_file = tmp_path / "test_prompts.txt"
    test_file.write_text("\n".join(s.prompt for s in split("test")[:4]) + "\n")
    values = {"epochs": 2, "sample.num_steps": 4, "sample.eval_num_steps": 4, "sample.batch_size": 4,
              "sample.group_size": 2, "sample.num_batches_per_epoch": 1, "sample.eval_batch_size": 4,
              "sample.eval_images_per_prompt": 1, "lora.rank": 4, "lora.alpha": 8, "train.learning_rate": 1e-2,
              "train.ema": False, "log.log_with": "[]", "log.output_dir": str(tmp_path / "run"),
              "log.eval_every": 0, "log.save_every": 1, "data.test_prompts": str(test_file), **extra}
    return [f"{k}={v}" for k, v in values.items()]


def make_trainer(tmp_path, config=CONFIGS / "toy.yaml", **extra) -> Trainer:
    return Trainer(load_config(config, tiny_overrides(tmp_path, **extra)))


def sample_and_score(trainer: Trainer, n: int = 1):
    batches = [trainer.rollouts.sample_batch(0, it, idx) for it, idx in zip(range(n), trainer.sampler, strict=False)]
    return batches, trainer.score_epoch(batches)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_loads_and_validates(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.epochs >= 1 and cfg.reward.weights


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="sample.batchsize"):
        load_config(None, ["sample.batchsize=3"])
    with pytest.raises(ConfigError, match="sample.batch_size"):
        load_config(None, ["sample.batch_size=many"])
    with pytest.raises(ConfigError, match="reward.weights"):
        load_config(None, ["reward.weights={no_such_reward: 1.0}"])
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        load_config(None, ["sample.num_batches_per_epoch=3", "train.gradient_accumulation_steps=2"])
    with pytest.raises(ConfigError, match="data.balance"):
        load_config(None, ["data.balance=families"])
    # a CPS window that may reach the last step (sigma' = 0, no noise) would make the KL divide by 0
    cps = ["sample.step_type=cps", "train.beta=1e-4", "sample.num_steps=6", "sample.window_size=5",
           "train.timestep_fraction=1.0"]
    with pytest.raises(ConfigError, match="sample.window_range"):
        load_config(None, cps)
    assert load_config(None, [*cps, "sample.window_range=[0,5]"]).sample.window_range == [0, 5]
    assert load_config(None, [*cps, "train.algorithm=tp_grpo"]).train.algorithm == "tp_grpo"  # W = first 5 steps
    assert load_config(None, ["mixed_precision=no"]).mixed_precision == "no"  # not YAML's false
    # one initial noise per group through a deterministic sampler would repeat one image per group
    for deterministic in ("train.algorithm=diffusion_nft", "sample.noise_level=0"):
        with pytest.raises(ConfigError, match="sample.same_latent"):
            load_config(None, ["sample.same_latent=true", deterministic])
    assert load_config(None, ["sample.same_latent=true"]).sample.same_latent
    # a replaced reward mapping does not keep the defaults' entries
    assert load_config(None, ["reward.weights={jpeg_compressibility: 1.0}"]).reward.weights == {
        "jpeg_compressibility": 1.0}


def test_bad_prompt_sources_are_config_errors_naming_the_key(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    cases = [("data.train_prompts", str(empty), "contains no prompts"),
             ("data.test_prompts", str(tmp_path / "missing.txt"), "not found"),
             ("data.train_prompts", "toy:validation", "unknown toy split")]
    for key, source, reason in cases:
        cfg = load_config(None, [f"{key}={source}", f"log.output_dir={tmp_path / 'run'}"])
        with pytest.raises(ConfigError, match=f"{key}=.*{reason}"):
            Trainer(cfg)


def test_first_update_is_on_policy_and_the_loss_has_its_closed_form(tmp_path):
    # Flow-GRPO without a window (the toy default has one): every step stochastic and recorded
    trainer = make_trainer(tmp_path, **{"sample.group_size": 4, "reward.weights": "{jpeg_compressibility: 1.0}",
                                        "reward.options": "{}", "sample.window_size": 0,
                                        "sample.window_range": "null", "train.timestep_fraction": 0.99})
    (batch,), metrics = sample_and_score(trainer)
    assert batch.trajectory.log_probs.shape == (4, 4)
    # all 4 steps are recorded, int(4 * 0.99) = 3 are trained: never the last one
    assert trainer.algorithm.train_positions(batch) == [0, 1, 2]
    assert metrics["zero_std_ratio"] == 0.0 and batch.keep.all()
    assert abs(batch.advantages.mean().item()) < 1e-5  # one group of 4: advantages sum to zero
    ctx = LossContext(trainer.adapter, trainer.models.model, None)
    for pos in trainer.algorithm.train_positions(batch):
        loss, m = trainer.algorithm.loss(ctx, batch, pos)
        assert m["ratio_max_dev"] == 0.0 and m["clipfrac"] == 0.0 and m["approx_kl"] == 0.0
        # at ratio 1 the clipped surrogate is exactly -mean(A)
        assert loss.item() == pytest.approx(-batch.advantages.mean().item(), abs=1e-7)


def test_kl_to_the_disabled_adapter_is_zero_at_init_and_positive_after_a_step(tmp_path):
    trainer = make_trainer(tmp_path, **{"train.beta": 0.04, "sample.group_size": 4,
                                        "reward.weights": "{jpeg_compressibility: 1.0}", "reward.options": "{}"})
    assert isinstance(trainer.models.reference, ReferencePolicy) and trainer.models.reference.copy is None
    (batch,), _ = sample_and_score(trainer)
    ctx = LossContext(trainer.adapter, trainer.models.model, trainer.models.reference)
    _, m = trainer.algorithm.loss(ctx, batch, 0)
    assert m["kl_loss"] == 0.0
    trainer.optimize_epoch([batch])
    _, m = trainer.algorithm.loss(ctx, batch, 0)
    assert m["kl_loss"] > 0.0 and m["ratio_max_dev"] > 0.0  # the policy moved; the reference did not


def test_all_nan_rewards_stop_the_run_before_any_update(tmp_path):
    trainer = make_trainer(tmp_path)
    lora = lambda: {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters() if "lora_" in n}
    before = lora()
    assert before and all(any(p is q for q in trainer.models.params) for n, p in trainer.unwrapped.named_parameters()
                          if "lora_" in n)  # the optimizer's parameters are these LoRA weights
    trainer.reward_fn.components["toy_verifier"].score = lambda images, prompts, metadata: type(
        "R", (), {"scores": torch.full((len(prompts),), math.nan), "info": {}})()
    with pytest.raises(FloatingPointError, match="toy_verifier"), pytest.warns(RuntimeWarning, match="non-finite"):
        trainer.train()  # the whole run: evaluation, then the first epoch's sampling, scoring and update
    assert trainer.state.global_step == 0 and trainer.state.epoch == 0
    assert not trainer.models.optimizer.state  # AdamW creates its moments at its first step
    after = lora()
    assert after.keys() == before.keys() and all(torch.equal(before[n], after[n]) for n in before)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_empty_prompt_file_is_named(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt"):
        make_trainer(tmp_path, **{"data.train_prompts": str(empty)})


def _lora(run: Path) -> dict:
    return load_file(str(run / "final" / "lora" / "pytorch_lora_weights.safetensors"))


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path):
    straight = make_trainer(tmp_path / "a")
    straight.train()
    records = [json.loads(line) for line in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert "eval/strict" in records[0] and "eval/strict" in records[-1]
    assert (tmp_path / "a" / "run" / "reward_curve.png").is_file()

    # the same run as a script, killed (SIGKILL) as soon as its first checkpoint is in place
    run_b = tmp_path / "b" / "run"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(CONFIGS / "toy.yaml"),
                             *tiny_overrides(tmp_path / "b")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (run_b / "checkpoints" / "checkpoint-000001").is_dir() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run_b / "final").exists()

    resumed = make_trainer(tmp_path / "b", resume="latest")
    resumed.train()
    assert resumed.state.epoch == 2 and resumed.sampler.iteration == 2
    a, b = _lora(tmp_path / "a" / "run"), _lora(run_b)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # the run did train
    resumed_records = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    untimed = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]
    assert untimed(resumed_records) == untimed(records)
    assert resumed_records[-1]["samples"] == 8


def test_exported_lora_and_merged_pipeline_reproduce_the_trained_policy(tmp_path):
    from genrl.models.loading import load_pipeline

    trainer = make_trainer(tmp_path, epochs=1)
    trainer.train()
    adapter, run, device = trainer.adapter, tmp_path / "run", trainer.accelerator.device
    x = torch.randn(2, *adapter.latent_shape(), generator=torch.Generator().manual_seed(0)).to(device)
    cond = adapter.encode(["a photo of a red circle", "a photo of two squares"])
    expected = adapter.velocity(x, 0.6, cond)

    def velocity(pipe):
        return type(adapter)(pipe.to(device), guidance_scale=adapter.guidance_scale,
                             max_sequence_length=0).velocity(x, 0.6, cond)

    base = velocity(load_pipeline("toy"))
    fresh = load_pipeline("toy", lora=run / "final" / "lora")
    merged = load_pipeline(str(run / "final" / "pipeline"))
    # fusing the LoRA into the weights changes float rounding (~3e-5); training moved the policy far more
    assert (expected - base).abs().max() > 1e-2
    for pipe in (fresh, merged):
        torch.testing.assert_close(velocity(pipe), expected, atol=2e-4, rtol=1e-3)


def test_zero_std_groups_contribute_no_gradient(tmp_path):
    trainer = make_trainer(tmp_path)  # batch of 4 = two groups of 2
    batch = trainer.rollouts.roll_out(0, 0, next(iter(trainer.sampler)))  # not yet scored
    order = batch.prompt_index.tolist()
    first = order[0]
    fixed = torch.tensor([0.5 if i == first else float(n) for n, i in enumerate(order)])
    trainer.reward_fn.score = lambda images, prompts, metadata: type("R", (), {
        "scores": fixed.clone(), "info": {"toy_verifier": fixed.clone()}})()
    trainer.rollouts.score(batch)  # the batch is scored as it is decoded: with these rewards
    assert torch.equal(batch.rewards.cpu(), fixed)
    metrics = trainer.score_epoch([batch])
    zero_group = batch.prompt_index == first
    assert metrics["zero_std_ratio"] == 0.5 and not batch.keep[zero_group].any() and batch.keep[~zero_group].all()
    ctx = LossContext(trainer.adapter, trainer.models.model, None)

    def grads():
        trainer.models.optimizer.zero_grad(set_to_none=True)
        loss, _ = trainer.algorithm.loss(ctx, batch, 0)
        loss.backward()
        return [p.grad.clone() for p in trainer.models.params]

    before = grads()
    batch.advantages = torch.where(zero_group, torch.full_like(batch.advantages, 3.0), batch.advantages)
    after = grads()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert any(a.abs().sum() > 0 for a in before)


@pytest.mark.parametrize("same_latent", [True, False])
def test_same_latent_shares_the_initial_noise_within_a_group(tmp_path, same_latent):
    trainer = make_trainer(tmp_path, **{"sample.same_latent": same_latent})
    batch = trainer.rollouts.sample_batch(0, 0, next(iter(trainer.sampler)))
    x0 = batch.trajectory.states[:, 0]
    ids = batch.prompt_index.tolist()
    pairs = [(i, j) for i in range(len(ids)) for j in range(i + 1, len(ids)) if ids[i] == ids[j]]
    assert pairs
    assert all(torch.equal(x0[i], x0[j]) == same_latent for i, j in pairs)
    assert not torch.equal(batch.trajectory.final[pairs[0][0]], batch.trajectory.final[pairs[0][1]])  # SDE noise differs


def test_evaluation_reports_geneval_family_means(tmp_path):
    """Per-family means and their mean (GenEval's overall score) next to the per-image mean."""
    trainer = make_trainer(tmp_path, **{"data.test_prompts": "toy:test"})

    class PromptLength:  # a score the test can recompute without images
        def __call__(self, images, prompts, metadata):
            return type("R", (), {"scores": torch.tensor([len(p) / 100 for p in prompts])})()

    trainer.rewards.eval_rewards = {"length": PromptLength()}
    metrics, _, _ = trainer.evaluator.evaluate()
    by_family: dict[str, list[float]] = {}
    for spec in split("test"):
        by_family.setdefault(spec.family, []).append(len(spec.prompt) / 100)
    assert len(by_family) == 6
    for family, values in by_family.items():
        assert metrics[f"eval/length/{family}"] == pytest.approx(sum(values) / len(values))
    family_mean = sum(sum(v) / len(v) for v in by_family.values()) / len(by_family)
    per_image = sum(len(s.prompt) / 100 for s in split("test")) / len(split("test"))
    assert metrics["eval/length/family_mean"] == pytest.approx(family_mean)
    assert metrics["eval/length"] == pytest.approx(per_image) and per_image != pytest.approx(family_mean)


def test_attention_backend_is_validated_and_xformers_names_its_extra(tmp_path):
    with pytest.raises(ConfigError, match="model.attention must name a kernel"):
        load_config(None, ["model.attention=''"])
    with pytest.raises(ConfigError, match="model.attention: SD3Transformer2DModel's attention does not go through "
                                          "diffusers' dispatcher, so 'flash' would not reach it"):
        make_trainer(tmp_path / "flash", **{"model.attention": "flash"})
    try:
        import xformers  # noqa: F401
    except ImportError:
        from rewards.optional import MissingExtraError

        with pytest.raises(MissingExtraError, match=r"\[xformers\]"):
            make_trainer(tmp_path, **{"model.attention": "xformers"})
    else:
        pytest.skip("xformers is installed, so there is no missing-extra error to check")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model.family": "sd4"}, r"model.family: unknown model family .sd4.; available: auto, flux, flux_kontext, qwen_image_edit, qwen_image_edit_plus, sd3, stable_audio, wan"),
    ({"model.family": "flux"}, r"model.family: model family 'flux' does not serve a StableDiffusion3Pipeline"),
    ({"model.options": "{num_frames: 9}"}, r"model.options: model family 'sd3' has no option 'num_frames'"),
])
def test_model_family_and_options_are_checked_against_the_pipeline(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_trainer(tmp_path, **overrides)


def test_the_family_picks_the_lora_targets_when_the_config_names_none(tmp_path):
    trainer = make_trainer(tmp_path)
    assert trainer.adapter.family == "sd3" and trainer.cfg.lora.target_modules is None
    targets = set(trainer.unwrapped.peft_config["default"].target_modules)
    assert targets == set(trainer.adapter.default_lora_targets)


def _capture_evaluation(trainer: Trainer) -> list[torch.Tensor]:
    """Make ``trainer.evaluator.evaluate()`` hand its images, in job order, to the returned list."""
    seen: list[torch.Tensor] = []

    class Capture:
        def __call__(self, media, prompts, metadata):
            seen.append(media.tensor.detach().clone())  # evaluation hands rewards its float Media
            return type("R", (), {"scores": torch.zeros(len(prompts))})()

    trainer.rewards.eval_rewards = {"capture": Capture()}
    return seen


def _eval_generators(trainer: Trainer) -> list[torch.Generator]:
    """The evaluation's initial-noise generators of the test prompts (one image each), keyed as documented."""
    from rewards.seeding import derived_seed

    return [torch.Generator().manual_seed(derived_seed(trainer.cfg.seed, "eval", i, 0))
            for i in range(len(trainer.test_set))]


def _pipeline_images(trainer: Trainer, guidance: float) -> torch.Tensor:
    """The diffusers pipeline's own sampler (Euler, CFG at ``guidance``) from the evaluation's noise."""
    with t5_tokens_dropped(trainer.models.pipe, 0):
        return trainer.models.pipe(trainer.test_set.prompts, num_inference_steps=trainer.cfg.sample.eval_num_steps,
                                   guidance_scale=guidance, max_sequence_length=0, generator=_eval_generators(trainer),
                                   output_type="pt").images


def test_evaluation_uses_cfg_when_only_the_evaluation_scale_asks_for_it(tmp_path):
    # rollouts without CFG (the DiffusionNFT recipe), evaluation at the base model's usual scale
    trainer = make_trainer(tmp_path, **{"sample.guidance_scale": 1.0, "sample.eval_guidance_scale": 4.5})
    seen = _capture_evaluation(trainer)
    trainer.evaluator.evaluate()
    images = torch.cat(seen)
    assert images.shape[0] == len(trainer.test_set) == 4
    # the LoRA starts at zero, so evaluation is the base pipeline with CFG at 4.5 from the same noise
    torch.testing.assert_close(images, _pipeline_images(trainer, 4.5), atol=1e-5, rtol=1e-4)
    assert (images - _pipeline_images(trainer, 1.0)).abs().max() > 0.05  # and not the CFG-free sampler


@pytest.mark.parametrize("eval_solver", [None, "euler"])
def test_evaluation_samples_with_the_training_solver_unless_told_otherwise(tmp_path, eval_solver):
    from genrl.sampling.rollout import rollout

    extra = {"sample.solver": "dpm2", **({"sample.eval_solver": eval_solver} if eval_solver else {})}
    trainer = make_trainer(tmp_path, **extra)
    seen = _capture_evaluation(trainer)
    trainer.evaluator.evaluate()
    images = torch.cat(seen)
    euler = _pipeline_images(trainer, trainer.cfg.sample.guidance_scale)  # the pipeline's own (Euler) sampler
    if eval_solver == "euler":
        torch.testing.assert_close(images, euler, atol=1e-5, rtol=1e-4)
        return
    # the deterministic sampler of the training rollouts, DPM-Solver++(2M), from the same noise
    adapter = trainer.adapter
    cond = adapter.encode(trainer.test_set.prompts)
    x = adapter.initial_noise(_eval_generators(trainer))
    traj = rollout(lambda z, s: adapter.velocity(z, s, cond), x, adapter.schedule(trainer.cfg.sample.eval_num_steps),
                   window=(0, 0), ode_solver="dpm2")
    torch.testing.assert_close(images, adapter.decode(traj.final).float(), atol=1e-5, rtol=1e-4)
    assert (images - euler).abs().max() > 1e-3


@pytest.mark.parametrize("batch, group, prompts", [(3, 2, None), (8, 2, 3)])
def test_the_trainer_checks_the_group_layout_of_its_own_launch(tmp_path, batch, group, prompts):
    """A config loaded without a process count (the Python API) is checked when the trainer knows it."""
    extra = {"sample.batch_size": batch, "sample.group_size": group}
    if prompts:
        train = tmp_path / "train.txt"
        train.write_text("".join(f"{s.prompt}\n" for s in split("train")[:prompts]), encoding="utf-8")
        extra["data.train_prompts"] = str(train)
    cfg = load_config(CONFIGS / "toy.yaml", tiny_overrides(tmp_path, **extra))  # no num_processes: not judged
    with pytest.raises(ConfigError, match="sample.group_size") as refused:
        Trainer(cfg)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()


def test_the_algorithm_declares_what_the_trainer_builds_for_it(tmp_path):
    """The reference policy exists when the algorithm says it needs one; a reward-backprop algorithm is refused
    a non-differentiable training reward, naming it."""
    from genrl.algorithms.base import register_algorithm
    from genrl.algorithms.flow_grpo import FlowGRPO

    @register_algorithm("test_reward_backprop")
    class Backprop(FlowGRPO):
        needs_differentiable_reward = True

    assert make_trainer(tmp_path / "a").models.reference is None  # toy.yaml: beta 0
    assert make_trainer(tmp_path / "b", **{"train.beta": 0.04}).models.reference is not None
    with pytest.raises(ConfigError, match="reward.weights.jpeg_compressibility: train.algorithm 'test_reward_backprop' "
                                          "backpropagates the reward, and reward 'jpeg_compressibility' is not"):
        make_trainer(tmp_path / "c", **{"train.algorithm": "test_reward_backprop",
                                        "reward.weights": "{jpeg_compressibility: 1.0}", "reward.options": "{}"})
    trainer = make_trainer(tmp_path / "d", **{"train.algorithm": "test_reward_backprop",
                                              "reward.weights": "{brightness: 1.0}", "reward.options": "{}"})
    assert trainer.reward_fn.differentiable


def test_the_epoch_belongs_to_the_algorithm(tmp_path):
    """An algorithm's run_epoch replaces the on-policy default; the trainer only keeps the books."""
    from genrl.algorithms import TrainerContext
    from genrl.algorithms.base import register_algorithm
    from genrl.algorithms.flow_grpo import FlowGRPO

    @register_algorithm("test_sample_only")
    class SampleOnly(FlowGRPO):
        def run_epoch(self, trainer, epoch):
            batches = trainer.sample_epoch(epoch)  # the services, without any update
            return {"sampled_reward": float(torch.cat([b.rewards for b in batches]).mean())}

    trainer = make_trainer(tmp_path, **{"train.algorithm": "test_sample_only", "epochs": 1})
    assert isinstance(trainer, TrainerContext)
    before = {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters() if "lora_" in n}
    record = trainer.train()
    assert "sampled_reward" in record and "reward/mean" not in record and trainer.state.global_step == 0
    assert trainer.state.samples == 4 and trainer.state.epoch == 1
    assert all(torch.equal(p, before[n]) for n, p in trainer.unwrapped.named_parameters() if "lora_" in n)


def test_reward_train_terms_may_repeat_a_reward_and_share_models_with_evaluation(tmp_path):
    from rewards import build_reward

    terms = ("[{name: brightness, label: bright}, {name: brightness, weight: 0.5, label: dark, options: {sign: -1}},"
             " {name: ensemble, weight: 2.0, options: {mode: wco, members: [{name: brightness}, {name: ink_balance}]}},"
             " {name: toy_verifier, weight: 0.0, options: {mode: partial}}]")
    trainer = make_trainer(tmp_path, **{"reward.train": terms})
    fn = trainer.reward_fn
    assert list(fn.components) == ["bright", "dark", "ensemble", "toy_verifier"]
    assert fn.weights == {"bright": 1.0, "dark": 0.5, "ensemble": 2.0, "toy_verifier": 0.0}
    # the evaluation metric with the same name and options is the training term's object: one loaded model
    assert trainer.rewards.eval_rewards["partial"] is fn.components["toy_verifier"]
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = [s.prompt for s in split("test")[:3]]
    metadata = [{"spec": s} for s in split("test")[:3]]
    bright = build_reward("brightness")(images, prompts).scores
    dark = build_reward("brightness", sign=-1)(images, prompts).scores
    ink = build_reward("ink_balance")(images, prompts).scores
    expected = bright + 0.5 * dark + 2.0 * torch.minimum(bright, ink)
    torch.testing.assert_close(fn(images, prompts, metadata).scores, expected, rtol=1e-5, atol=1e-6)
    _, metrics = sample_and_score(trainer)
    assert "reward/dark/mean" in metrics and "reward/bright/mean" in metrics


@pytest.mark.parametrize(("terms", "message"), [
    ("[{name: brightness}, {name: brightness, options: {sign: -1}}]", r"reward.train\[1\]: label 'brightness' is used twice"),
    ("[{name: brightness, wieght: 1}]", r"reward.train\[0\] has unknown keys \['wieght'\]"),
    ("[{name: brightnes}]", r"reward.train\[0\].name: unknown reward 'brightnes'"),
    ("[{name: brightness, weight: -1}]", r"reward.train\[0\].weight=-1 must be a finite number >= 0"),
    ("[{name: brightness, weight: 0}]", "reward.train weights are all 0"),
    ("[{weight: 1}]", r"reward.train\[0\] must be a mapping with a 'name'"),
])
def test_bad_reward_train_terms_are_config_errors(terms, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"reward.train={terms}"])


def test_par_trains_against_reference_rewards_scored_by_the_script(tmp_path):
    """scripts/reference_rewards.py scores the base model on the training prompts; a PAR term reads the file."""
    import importlib.util

    from rewards import build_reward
    from rewards.transforms import ReferenceRewards

    train_file = tmp_path / "train.txt"
    train_file.write_text("\n".join(s.prompt for s in split("train")[:4]) + "\n")
    spec = importlib.util.spec_from_file_location("reference_rewards", ROOT / "scripts" / "reference_rewards.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    refs_path = tmp_path / "refs.json"
    assert script.main(["--reward", "brightness", "--samples", "3", "--out", str(refs_path),
                        "sample.num_steps=4", f"data.train_prompts={train_file}"]) == 0
    refs = ReferenceRewards.load(refs_path)
    assert len(refs) == 4 and all(refs.get(p).numel() == 3 for p in train_file.read_text().split("\n") if p)
    terms = f"[{{name: par, options: {{base: {{name: brightness}}, references: {refs_path}}}}}]"
    trainer = make_trainer(tmp_path, **{"reward.train": terms, "data.train_prompts": str(train_file)})
    batches, metrics = sample_and_score(trainer)
    batch = batches[0]
    raw = build_reward("brightness")(batch.media, batch.prompts).scores  # the stored 8-bit copy: close to the float
    expected = torch.stack([torch.sigmoid(raw[i] - refs.get(p)).mean() for i, p in enumerate(batch.prompts)])
    torch.testing.assert_close(batch.rewards.cpu(), expected, rtol=0, atol=2e-3)
    assert 0 < metrics["reward/mean"] < 1


def test_cached_prompt_embeddings_sample_what_encoding_each_batch_samples(tmp_path):
    plain = make_trainer(tmp_path / "plain")
    cached = make_trainer(tmp_path / "cached", **{"sample.cache_prompt_embeddings": True})
    (a,), _ = sample_and_score(plain)
    (b,), _ = sample_and_score(cached)
    torch.testing.assert_close(b.trajectory.final, a.trajectory.final, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.rewards, a.rewards)
    cache = cached.rollouts.embedding_cache
    distinct = len(set(b.prompts))
    assert (cache.misses, cache.hits) == (distinct, len(b.prompts) - distinct)
    first, _, _ = cached.evaluator.evaluate()
    misses = cache.misses
    second, _, _ = cached.evaluator.evaluate()  # the held-out prompts are encoded once
    assert cache.misses == misses and first == second
    assert first == pytest.approx(plain.evaluator.evaluate()[0], abs=1e-6)



def test_offloaded_frozen_components_run_one_at_a_time_and_the_run_is_the_same(tmp_path):
    offloaded = ["text_encoder", "text_encoder_2", "vae"]
    plain = make_trainer(tmp_path / "plain", **{"train.ema": True, "train.ema_update_every": 1})
    off = make_trainer(tmp_path / "off", **{"model.cpu_offload": f"[{','.join(offloaded)}]", "train.ema": True,
                                           "train.ema_update_every": 1, "train.ema_on_cpu": True})
    pipe, offload = off.models.pipe, off.models.offload
    seen = []  # (component running, the one on the device) while each runs
    for name in ("text_encoder", "text_encoder_2"):
        getattr(pipe, name).register_forward_hook(lambda m, a, o, name=name: seen.append((name, offload.resident)))
    pipe.vae.decoder.register_forward_hook(lambda m, a, o: seen.append(("vae", offload.resident)))
    (a,), _ = sample_and_score(plain)
    (b,), _ = sample_and_score(off)
    assert {name for name, _ in seen} == set(offloaded) and all(name == on for name, on in seen), seen
    assert offload.resident is None  # nothing stays on the device once the adapter call returns
    torch.testing.assert_close(b.trajectory.final, a.trajectory.final)
    torch.testing.assert_close(b.rewards, a.rewards)
    plain.train()
    off.train()
    assert off.models.ema_device == torch.device("cpu")
    assert all(t.device.type == "cpu" for t in off.models.ema.shadow_params)
    for p, q in zip(plain.models.ema.shadow_params, off.models.ema.shadow_params, strict=True):
        torch.testing.assert_close(q, p)
    with pytest.raises(ConfigError, match=r"model.cpu_offload: 'transformer' is not a frozen component of this "
                                          r"model family \(choose from vae, text_encoder, text_encoder_2"):
        make_trainer(tmp_path / "bad", **{"model.cpu_offload": "[transformer]"})


def test_vae_slicing_and_tiling_are_switched_on_and_slicing_decodes_the_same(tmp_path):
    trainer = make_trainer(tmp_path / "a", **{"model.vae_slicing": True, "model.vae_tiling": True})
    vae = trainer.models.pipe.vae
    assert vae.use_slicing and vae.use_tiling
    vae.disable_tiling()  # tiles blend at their seams; slicing only splits the batch
    latents = torch.randn(3, *trainer.adapter.initial_noise([torch.Generator().manual_seed(0)]).shape[1:],
                          generator=torch.Generator().manual_seed(1))
    sliced = trainer.adapter.decode(latents)
    vae.disable_slicing()
    torch.testing.assert_close(sliced, trainer.adapter.decode(latents), rtol=1e-5, atol=1e-5)
