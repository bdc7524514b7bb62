"""DeepSpeed ZeRO-2 through accelerate, on two gloo processes (DeepSpeed's CPU accelerator): the shipped config's
run equals the same run under DDP (records, exported LoRA; also with the optimizer state offloaded), its checkpoint holds only the trainable weights and
resumes to the same result; a resume on another number of processes works for DDP (the per-process batch
doubled) and is refused in one line for ZeRO-2; what ZeRO-2 cannot run is refused naming the key."""

import pickle
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers.trainer_launch import COMMON, LORA, ROOT, launch, rank_reports, records
from safetensors.torch import load_file

from genrl.config import ConfigError, load_config
from genrl.trainer.deepspeed_zero import (
    check_deepspeed_run,
    configure_deepspeed,
    deepspeed_launch,
    load_checkpoints_weights_only,
)
from rewards.optional import MissingExtraError, require
from rewards.toyworld.prompts import split


@pytest.mark.timeout(900)
def test_a_zero2_run_is_the_ddp_run_resumes_and_checkpoints_only_the_trainable_weights(tmp_path):
    test_file = tmp_path / "test.txt"
    test_file.write_text("\n".join(s.prompt for s in split("test")[:3]) + "\n")
    common = [*COMMON, "log.export_merged=false", f"data.test_prompts={test_file}"]
    ddp, zero = tmp_path / "ddp", tmp_path / "zero2"
    launch(ddp, "ddp.yaml", 29551, *common, "epochs=2", f"log.output_dir={ddp / 'run'}")
    launch(zero, "deepspeed_zero2.yaml", 29552, *common, "epochs=1", f"log.output_dir={zero / 'run'}")
    launch(zero, "deepspeed_zero2.yaml", 29553, *common, "epochs=2", "resume=latest", f"log.output_dir={zero / 'run'}")

    assert all(r == {"world": 2, "sharded": False, "global_step": 2} for r in rank_reports(zero))
    want, got = records(ddp / "run"), records(zero / "run")
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [0, 1, 2]
    for w, g in zip(want, got, strict=True):  # grad_norm too: the engine clips and reports the same norm
        keys = [k for k in w if k.startswith(("reward/", "train/", "eval/"))]
        assert keys and all(g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-5) for k in keys), (w, g)
    a, b = load_file(str(ddp / "run" / LORA)), load_file(str(zero / "run" / LORA))
    assert a.keys() == b.keys() and any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4)  # Adam at lr 1e-2 magnifies rounding

    # with the optimizer state offloaded to host memory (ZeRO-Offload) the same run again
    offload = tmp_path / "offload.yaml"
    offload.write_text((ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml").read_text().replace(
        "offload_optimizer_device: none", "offload_optimizer_device: cpu"))
    launch(tmp_path / "offload", str(offload), 29556, *common, "epochs=2",
           f"log.output_dir={tmp_path / 'offload' / 'run'}")
    c = load_file(str(tmp_path / "offload" / "run" / LORA))
    for k in a:
        torch.testing.assert_close(c[k], a[k], rtol=1e-3, atol=1e-4)

    # the engine's checkpoint: the LoRA weights only (not the frozen base) and one optimizer partition per process
    ckpt = zero / "run" / "checkpoints" / "checkpoint-000001"
    module = torch.load(ckpt / "pytorch_model" / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    assert any("lora_" in k for k in module)
    assert {k for k in module if "lora_" not in k} == {"pos_embed.pos_embed"}  # the transformer's one buffer
    assert sorted(p.name for p in (ckpt / "pytorch_model").glob("zero_pp_rank_*")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]

    # on one process: ZeRO-2's partitions are refused in one line; DDP's checkpoint resumes, its batch doubled
    result = launch(tmp_path / "zero1", "deepspeed_zero2.yaml", 29554, *common, "epochs=2", "sample.batch_size=4",
                    f"resume={ckpt}", f"log.output_dir={tmp_path / 'zero1' / 'run'}", processes=1, check=False)
    assert result.returncode != 0 and "written by 2 DeepSpeed processes" in result.stderr
    one = tmp_path / "ddp1"
    launch(one, "ddp.yaml", 29555, *common, "epochs=2", "sample.batch_size=4",
           f"resume={ddp / 'run' / 'checkpoints' / 'checkpoint-000001'}", f"log.output_dir={one / 'run'}", processes=1)
    assert rank_reports(one, 1) == [{"world": 1, "sharded": False, "global_step": 2}]
    assert [r["epoch"] for r in records(one / "run")] == [2]


def test_what_zero2_cannot_run_is_refused_naming_the_key():
    cfg = load_config(None, [])
    with pytest.raises(ConfigError, match="model.sharding=fsdp: the launch's accelerate config asks for DeepSpeed"):
        check_deepspeed_run(cfg, "fsdp", False, 2, {})
    with pytest.raises(ConfigError, match="train.algorithm=flow_grpo calls the denoiser many times per backward"):
        check_deepspeed_run(cfg, "none", True, 2, {})
    env = {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}
    with pytest.raises(ConfigError, match=r"deepspeed_config.gradient_accumulation_steps=4: .* \(2 here\)"):
        check_deepspeed_run(cfg, "none", False, 2, env)
    env = {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "1"}
    check_deepspeed_run(cfg, "none", False, 2, env)
    assert env == {}  # genrl's accumulation, not the launch's, reaches the Accelerator

    def accelerator(zero):
        plugin = SimpleNamespace(deepspeed_config={"zero_optimization": zero, "gradient_accumulation_steps": "auto"})
        return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), gradient_accumulation_steps=3,
                               num_processes=2)

    with pytest.raises(ConfigError, match="deepspeed_config.zero_stage=3: genrl runs ZeRO stages 0-2"):
        configure_deepspeed(accelerator({"stage": 3}), cfg, micro_batch=8)
    with pytest.raises(ConfigError, match="deepspeed_config.offload_param_device"):
        configure_deepspeed(accelerator({"stage": 2, "offload_param": {"device": "cpu"}}), cfg, micro_batch=8)
    acc = accelerator({"stage": 2, "offload_optimizer": {"device": "cpu"}})
    configure_deepspeed(acc, load_config(None, ["train.max_grad_norm=0.5"]), micro_batch=8)
    ds = acc.state.deepspeed_plugin.deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"],
            ds["gradient_clipping"]) == (8, 3, 48, 0.5)


def test_a_deepspeed_launch_without_deepspeed_names_the_extra(monkeypatch):
    assert not deepspeed_launch({})
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # an import of it now fails
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[deepspeed\]"'):
        deepspeed_launch({"ACCELERATE_USE_DEEPSPEED": "true"})


class _NotARecord:
    pass


def test_the_engine_reads_its_checkpoints_weights_only(tmp_path):
    LossScaler = require("deepspeed.runtime.fp16.loss_scaler").LossScaler

    engine = SimpleNamespace(checkpoint_engine=SimpleNamespace())
    load_checkpoints_weights_only(engine)
    torch.save({"loss_scaler": LossScaler(2.0), "state": torch.ones(3)}, tmp_path / "optim.pt")
    loaded = engine.checkpoint_engine.load(str(tmp_path / "optim.pt"), map_location="cpu")
    assert loaded["loss_scaler"].cur_scale == 2.0 and torch.equal(loaded["state"], torch.ones(3))
    torch.save({"payload": _NotARecord()}, tmp_path / "other.pt")
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        engine.checkpoint_engine.load(str(tmp_path / "other.pt"), map_location="cpu")
