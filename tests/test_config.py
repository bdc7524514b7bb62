"""genrl.config: one-line errors naming their source, the checks made before any model loads, and
that loading a config imports neither torch nor a model library."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genrl.config import ConfigError, _rewards_in_sources, load_config

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "configs" / "toy.yaml"
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "peft")


def _error(path=None, overrides=(), **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides), **kwargs)
    message = str(info.value)
    assert "\n" not in message, message  # one line, never a multi-line dump
    return message


def test_loading_and_rejecting_a_config_imports_no_heavy_module():
    code = ("import json, sys\n"
            "from genrl.config import ConfigError, load_config\n"
            f"load_config({str(TOY)!r}, ['sample.batch_size=8'], num_processes=1)\n"
            "try:\n"
            f"    load_config({str(TOY)!r}, ['reward.weights={{no_such_reward: 1.0}}'])\n"
            "except ConfigError:\n"
            f"    print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == []


def test_reward_names_read_from_the_sources_are_the_registered_ones():
    from rewards import available_rewards

    # other tests may register their own rewards in this process: the package's are among the live ones
    names = _rewards_in_sources()
    assert {"toy_verifier", "brightness", "jpeg_compressibility", "pickscore", "remote"} <= names
    assert names <= set(available_rewards())


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample:\n  batch_size: 4\n group_size: [\n", encoding="utf-8")
    message = _error(bad)
    assert message.startswith(f"invalid YAML in {bad}, line 3, column 2:")
    listing = tmp_path / "list.yaml"
    listing.write_text("- epochs: 3\n", encoding="utf-8")
    assert f"{listing} must hold a mapping" in _error(listing)


def test_an_override_error_names_the_override_and_a_file_error_names_the_file(tmp_path):
    message = _error(TOY, ["epochs=2", "foo.bar=1"])
    assert "command-line override 'foo.bar=1'" in message and "toy.yaml" not in message
    assert "sample.batch_size" in _error(TOY, ["sample.batch_size=many"])
    assert "expected key=value" in _error(None, ["epochs"])
    typo = tmp_path / "typo.yaml"
    typo.write_text("sample:\n  batchsize: 3\n", encoding="utf-8")
    message = _error(typo, ["epochs=2"])
    assert f"in {typo}: sample.batchsize" in message and "command-line" not in message


def test_a_local_model_directory_must_exist_but_a_hub_id_is_not_checked(tmp_path):
    assert "model.pretrained='./no-such-pipeline': model directory not found" in _error(
        None, ["model.pretrained=./no-such-pipeline"])
    assert "model.pretrained" in _error(None, [f"model.pretrained={tmp_path / 'a' / 'b'}"])
    assert "no model_index.json" in _error(None, [f"model.pretrained={tmp_path}"])
    (tmp_path / "model_index.json").write_text("{}", encoding="utf-8")
    for ok in (str(tmp_path), "stabilityai/stable-diffusion-3.5-medium", "toy", "genrl/sd3-toy"):
        assert load_config(None, [f"model.pretrained={ok}"]).model.pretrained == ok


def test_the_loader_loads_what_the_model_check_accepts_and_refuses_with_its_message(tmp_path):
    from genrl.models.loading import resolve_model_path

    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    assert resolve_model_path(str(tmp_path / "pipe")) == str(tmp_path / "pipe")
    assert resolve_model_path("org/model") == "org/model"  # a hub id: only loading can check it
    assert (Path(resolve_model_path("genrl/sd3-toy")) / "model_index.json").is_file()
    for value in (str(tmp_path / "empty"), str(tmp_path / "missing"), "./missing", "~/missing-x", "a/b/c"):
        with pytest.raises(FileNotFoundError) as refused:
            resolve_model_path(value)
        assert _error(None, [f"model.pretrained={value}"]) == f"model.pretrained={value!r}: {refused.value}"


def test_group_size_must_divide_the_images_of_an_iteration_as_the_sampler_requires():
    from genrl.algorithms.sampler import KRepeatSampler

    message = _error(None, ["sample.batch_size=16", "sample.group_size=3"], num_processes=1)
    assert "sample.group_size=3" in message and "sample.batch_size = 1 x 16 = 16" in message
    # without a process count (a config for 8 GPUs loaded on a laptop) the layout is not judged
    assert load_config(None, ["sample.batch_size=9", "sample.group_size=24"]).sample.group_size == 24
    for processes, batch, k, fits in [(1, 16, 8, True), (1, 16, 3, False), (2, 4, 8, True), (1, 4, 8, False),
                                      (3, 9, 24, False), (8, 9, 24, True), (2, 3, 2, True)]:
        overrides = [f"sample.batch_size={batch}", f"sample.group_size={k}"]
        if fits:
            load_config(None, overrides, num_processes=processes)
            KRepeatSampler(1000, batch, k, num_replicas=processes)
            continue
        with pytest.raises(ValueError) as refused:  # the sampler states the config's rule, in its words
            KRepeatSampler(1000, batch, k, num_replicas=processes)
        assert _error(None, overrides, num_processes=processes) == str(refused.value)


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf", "-0.5"])
def test_reward_weights_must_be_finite_and_non_negative(weight):
    message = _error(None, [f"reward.weights={{toy_verifier: {weight}}}"])
    assert message.startswith("reward.weights.toy_verifier=")


def test_reward_weights_need_one_positive_weight():
    assert "at least one reward needs a positive weight" in _error(None, ["reward.weights={toy_verifier: 0.0}"])
    cfg = load_config(None, ["reward.weights={toy_verifier: 1.0, brightness: 0.0}"])
    assert cfg.reward.weights == {"toy_verifier": 1.0, "brightness": 0.0}


def test_a_cps_kl_window_that_reaches_the_last_step_is_rejected_whatever_the_fraction():
    # every window step is trained, so a fraction below 1 no longer keeps the last (sigma' = 0) step out
    cps = ["sample.step_type=cps", "train.beta=1e-4", "sample.num_steps=6", "sample.window_size=5"]
    assert "sample.window_range" in _error(None, [*cps, "train.timestep_fraction=0.5"])
    assert load_config(None, [*cps, "sample.window_range=[0,5]"]).sample.window_size == 5


def test_an_iteration_needing_more_prompts_than_the_training_set_has_is_a_config_error(tmp_path):
    from genrl.algorithms.sampler import KRepeatSampler
    from rewards.toyworld.prompts import split

    n_train = len(split("train"))
    message = _error(None, [f"sample.batch_size={2 * n_train}", "sample.group_size=1"], num_processes=1)
    for key in ("sample.batch_size", "sample.group_size", "data.train_prompts"):
        assert key in message
    assert f"{2 * n_train} distinct prompts per sampling iteration" in message and f"has {n_train}" in message
    three = tmp_path / "three.txt"
    three.write_text("a red circle\na blue square\na green cross\n", encoding="utf-8")
    # (processes, batch, group): processes x batch / group prompts are drawn per iteration, 3 exist
    for processes, batch, k, fits in [(1, 6, 2, True), (1, 8, 2, False), (2, 4, 2, False), (2, 3, 2, True),
                                      (1, 24, 8, True), (3, 6, 6, True), (3, 8, 6, False), (1, 4, 1, False)]:
        overrides = [f"data.train_prompts={three}", f"sample.batch_size={batch}", f"sample.group_size={k}"]
        if fits:
            load_config(None, overrides, num_processes=processes)
            KRepeatSampler(3, batch, k, num_replicas=processes)
            continue
        with pytest.raises(ValueError) as refused:
            KRepeatSampler(3, batch, k, num_replicas=processes)
        assert _error(None, overrides, num_processes=processes) == str(refused.value)
    # the prompt source itself is checked on the way, with the trainer's message
    assert _error(None, [f"data.train_prompts={tmp_path / 'none.txt'}"], num_processes=1).startswith(
        f"data.train_prompts='{tmp_path / 'none.txt'}': ")


def test_the_removed_train_cfg_key_is_ignored_when_true_and_refused_when_false(tmp_path):
    import dataclasses

    import yaml

    from genrl.config import TrainConfig, to_yaml

    assert "cfg" not in {f.name for f in dataclasses.fields(TrainConfig)}
    # a run's config.yaml written before the key went holds train.cfg: true, which is what the trainer does
    saved = yaml.safe_load(to_yaml(load_config(TOY)))
    saved["train"]["cfg"] = True
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump(saved), encoding="utf-8")
    with pytest.warns(FutureWarning, match="train.cfg .* is ignored"):
        assert load_config(old) == load_config(TOY)
    with pytest.warns(FutureWarning, match="train.cfg"):
        load_config(None, ["train.cfg=true"])
    # false promised a training forward without CFG, which only sample.guidance_scale=1 gives
    for overrides in (["train.cfg=false"], ["sample.guidance_scale=1", "train.cfg=false"]):
        message = _error(None, overrides)
        assert message.startswith("train.cfg=false in the command-line override 'train.cfg=false': train.cfg was removed")
        assert "sample.guidance_scale=1" in message
    saved["train"]["cfg"] = False
    old.write_text(yaml.safe_dump(saved), encoding="utf-8")
    assert _error(old).startswith(f"train.cfg=false in {old}: ")


def test_the_evaluation_solver_defaults_to_the_training_one_and_is_checked():
    assert load_config(None, ["sample.solver=dpm2"]).sample.eval_solver is None  # the trainer reads None as solver
    assert load_config(None, ["sample.solver=dpm2", "sample.eval_solver=euler"]).sample.eval_solver == "euler"
    assert "sample.eval_solver" in _error(None, ["sample.eval_solver=heun"])
