"""The trainer with its denoiser sharded (FSDP2) over two gloo processes: launched with the shipped FSDP2
accelerate config, a run equals the same run with the denoiser replicated (DDP) to float tolerance (training
rewards, losses, held-out evaluation, the exported LoRA), its checkpoint resumes to the same result, and its
export loads in the stock pipeline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rewards.toyworld.prompts import split

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "helpers" / "sharded_trainer_worker.py"
LORA = Path("final") / "lora" / "pytorch_lora_weights.safetensors"


def launch(out: Path, config: str | None, port: int, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    where = ["--config_file", str(ROOT / "configs" / "accelerate" / config)] if config else ["--multi_gpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *where, "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), str(WORKER),
           str(out), *overrides]
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(900)
def test_a_sharded_run_is_the_replicated_run_and_resumes(tmp_path):
    test_file = tmp_path / "test.txt"  # 3 held-out images over 2 ranks, one per batch: rank 1 runs a lockstep filler
    test_file.write_text("\n".join(s.prompt for s in split("test")[:3]) + "\n")
    common = ["sample.num_steps=3", "sample.eval_num_steps=3", "sample.batch_size=2", "sample.group_size=4",
              "sample.num_batches_per_epoch=1", "sample.eval_batch_size=1", "sample.eval_images_per_prompt=1",
              "sample.window_size=0", "sample.window_range=null", "train.timestep_fraction=0.67",
              "lora.rank=4", "lora.alpha=8", "train.learning_rate=1e-2", "train.ema=true", "train.ema_update_every=1",
              "train.beta=0.04", "log.log_with=[]", "log.eval_every=1", "log.save_every=1", "log.export_merged=true",
              "time_budget_minutes=0", f"data.test_prompts={test_file}"]
    replicated, sharded = tmp_path / "ddp", tmp_path / "fsdp"
    launch(replicated, None, 29541, *common, "epochs=2", "model.sharding=none", f"log.output_dir={replicated / 'run'}")
    # the shipped FSDP2 config (model.sharding=auto follows it); one epoch, then the same command resumed to two
    launch(sharded, "fsdp2.yaml", 29542, *common, "epochs=1", f"log.output_dir={sharded / 'run'}")
    launch(sharded, "fsdp2.yaml", 29543, *common, "epochs=2", "resume=latest", f"log.output_dir={sharded / 'run'}")

    ranks = [json.loads((sharded / f"rank{r}.json").read_text()) for r in range(2)]
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


@pytest.mark.parametrize("name", ["single_process", "ddp", "multi_node", "fsdp2"])
def test_the_shipped_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    expected = {"single_process": "NO", "ddp": "MULTI_GPU", "multi_node": "MULTI_GPU", "fsdp2": "FSDP"}[name]
    assert config.distributed_type.value == expected
    assert (config.num_machines > 1) == (name == "multi_node")
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2


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
