"""The trainer with its denoiser sharded (FSDP2) over two gloo processes: launched with the shipped FSDP2
accelerate config, a run equals the same run with the denoiser replicated (DDP) to float tolerance (training
rewards, losses, held-out evaluation, the exported LoRA), its checkpoint resumes to the same result (and on one
process), and its export loads in the stock pipeline."""

import json

import pytest
import torch
from helpers.trainer_launch import COMMON, LORA, ROOT, launch, rank_reports, records
from safetensors.torch import load_file

from rewards.toyworld.prompts import split


@pytest.mark.timeout(900)
def test_a_sharded_run_is_the_replicated_run_and_resumes(tmp_path):
    test_file = tmp_path / "test.txt"  # 3 held-out images over 2 ranks, one per batch: rank 1 runs a lockstep filler
    test_file.write_text("\n".join(s.prompt for s in split("test")[:3]) + "\n")
    common = [*COMMON, "log.export_merged=true", f"data.test_prompts={test_file}"]
    replicated, sharded = tmp_path / "ddp", tmp_path / "fsdp"
    launch(replicated, None, 29541, *common, "epochs=2", "model.sharding=none", f"log.output_dir={replicated / 'run'}")
    # the shipped FSDP2 config (model.sharding=auto follows it); one epoch, then the same command resumed to two
    launch(sharded, "fsdp2.yaml", 29542, *common, "epochs=1", f"log.output_dir={sharded / 'run'}")
    launch(sharded, "fsdp2.yaml", 29543, *common, "epochs=2", "resume=latest", f"log.output_dir={sharded / 'run'}")

    # on one process, its batch doubled (the same 4 images per sampling iteration): the distributed checkpoint
    # written by two is re-sharded onto one
    one = tmp_path / "fsdp1"
    launch(one, "fsdp2.yaml", 29544, *common, "epochs=2", "sample.batch_size=4",
           f"resume={sharded / 'run' / 'checkpoints' / 'checkpoint-000001'}", f"log.output_dir={one / 'run'}",
           processes=1)
    assert rank_reports(one, 1) == [{"world": 1, "sharded": True, "global_step": 2}]
    assert [r["epoch"] for r in records(one / "run")] == [2]

    ranks = rank_reports(sharded)
    assert all(r["world"] == 2 and r["sharded"] and r["global_step"] == 2 for r in ranks), ranks
    assert not json.loads((replicated / "rank0.json").read_text())["sharded"]
    assert (sharded / "run" / "checkpoints" / "checkpoint-000001" / "sharded").is_dir()

    want, got = records(replicated / "run"), records(sharded / "run")
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [0, 1, 2]
    for w, g in zip(want, got, strict=True):
        keys = [k for k in w if k.startswith(("reward/", "train/", "eval/")) and "grad_norm" not in k]
        assert keys and all(g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-5) for k in keys), (w, g)
    a, b = load_file(str(replicated / "run" / LORA)), load_file(str(sharded / "run" / LORA))
    assert a.keys() == b.keys() and any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4)  # Adam at lr 1e-2 magnifies rounding

    # the gathered export is a plain pipeline for the stock class
    from diffusers import StableDiffusion3Pipeline

    from genrl.toy.pipeline import load_toy_pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(sharded / "run" / "final" / "pipeline")  # as it is
    base = load_toy_pipeline().transformer.state_dict()
    merged = pipe.transformer.state_dict()
    assert merged.keys() == base.keys() and any(not torch.equal(merged[k], base[k]) for k in base)  # LoRA fused in


@pytest.mark.parametrize("name", ["single_process", "ddp", "multi_node", "fsdp2", "deepspeed_zero2"])
def test_the_shipped_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    expected = {"single_process": "NO", "ddp": "MULTI_GPU", "multi_node": "MULTI_GPU", "fsdp2": "FSDP",
                "deepspeed_zero2": "DEEPSPEED"}[name]
    assert config.distributed_type.value == expected
    assert (config.num_machines > 1) == (name == "multi_node")
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
    if name == "deepspeed_zero2":
        assert config.deepspeed_config["zero_stage"] == 2


def test_an_fsdp_launch_is_genrls_own_sharding_and_a_conflict_is_said():
    from genrl.config import ConfigError, load_config
    from genrl.trainer.sharding import resolve_sharding

    launch = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
    env = dict(launch)
    assert resolve_sharding("auto", env)[0] == "fsdp" and "ACCELERATE_USE_FSDP" not in env  # accelerate's is off
    env = {**launch, "FSDP_VERSION": "1"}
    mode, note = resolve_sharding("auto", env)
    assert mode == "fsdp" and "fsdp_version 1; genrl uses version 2" in note
    mode, note = resolve_sharding("none", dict(launch))
    assert mode == "none" and "replicated on every process (DDP)" in note
    assert resolve_sharding("auto", {}) == ("none", None)
    assert resolve_sharding("fsdp", {})[0] == "fsdp"
    with pytest.raises(ConfigError, match="model.sharding must be 'auto', 'none' or 'fsdp'"):
        load_config(None, ["model.sharding=zero3"])
