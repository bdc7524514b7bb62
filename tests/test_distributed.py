"""Two CPU processes (gloo): groups span processes, rewards are gathered with their prompts, DDP stays in sync.

The run is Adv-GRPO (epoch 1 trains its discriminator, epoch 2 the generator with Flow-GRPO's loss), so the
same two processes also show that discriminator updates are synchronised.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genrl.algorithms.advantages import group_advantages
from rewards.toyworld.prompts import split

WORKER = Path(__file__).resolve().parent / "helpers" / "distributed_worker.py"


def _launch_two_processes(out: Path, overrides: list[str], port: int) -> None:
    """Run the worker under ``accelerate launch`` with two processes; fail with its stderr if it fails."""
    # no GPU visible: the Trainer asks for Accelerator(cpu=True), so --multi_gpu starts two gloo processes
    # (on a one-GPU machine two NCCL ranks would otherwise share the device and fail)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(WORKER), str(out), *overrides]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.timeout(300)
def test_two_process_training_gathers_groups_across_ranks(tmp_path):
    test_file = tmp_path / "test.txt"
    test_file.write_text("\n".join(s.prompt for s in split("test")[:2]) + "\n")
    overrides = ["epochs=2", "train.algorithm=adv_grpo", "adv.d_times=2", "adv.references_per_prompt=2", "sample.num_steps=3", "sample.eval_num_steps=3", "sample.batch_size=2",
                 "sample.group_size=4", "sample.num_batches_per_epoch=1", "sample.eval_batch_size=2",
                 "lora.rank=4", "lora.alpha=8", "train.ema=false", "train.learning_rate=1e-2",
                 "reward.weights={jpeg_compressibility: 1.0, dino_adversarial: 1.0}",
                 "reward.options={dino_adversarial: {backbone: toy, num_patches: 8, lr: 1e-2}}", "log.log_with=[]",
                 f"data.test_prompts={test_file}", f"log.output_dir={tmp_path / 'run'}", "log.export_merged=false"]
    _launch_two_processes(tmp_path, overrides, port=29517)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    # one prompt, k = 4 copies, split 2 + 2 over the two processes
    ids = ranks[0]["indices"] + ranks[1]["indices"]
    assert len(set(ids)) == 1 and len(ranks[0]["indices"]) == 2
    rewards = torch.tensor(ranks[0]["rewards"] + ranks[1]["rewards"])
    expected = group_advantages(rewards, ids, global_std=True)
    got = torch.tensor(ranks[0]["advantages"] + ranks[1]["advantages"])
    torch.testing.assert_close(got, expected.advantages)
    assert abs(got.sum().item()) < 1e-4  # the group's advantages sum to zero only across both ranks
    assert ranks[0]["metrics"]["reward/mean"] == pytest.approx(rewards.mean().item(), abs=1e-6)

    a, b = load_file(str(tmp_path / "lora0.safetensors")), load_file(str(tmp_path / "lora1.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)
    assert (tmp_path / "run" / "final" / "lora" / "pytorch_lora_weights.safetensors").is_file()

    # each rank scored its own generations, yet the averaged discriminator gradients keep the heads identical
    d0, d1 = load_file(str(tmp_path / "discriminator0.safetensors")), load_file(str(tmp_path / "discriminator1.safetensors"))
    assert all(torch.equal(d0[k], d1[k]) for k in d0)
    assert [json.loads((tmp_path / f"adv{r}.json").read_text()) for r in range(2)] == \
        [{"discriminator_steps": 1, "generator_epochs": 1}] * 2


@pytest.mark.timeout(300)
def test_two_process_reward_backprop_keeps_the_ranks_identical(tmp_path):
    """Reward backpropagation calls the denoiser outside DDP (many forwards per backward, recomputed in it): the
    trainer averages the gradients itself, so the ranks, which generate different images, stay identical."""
    test_file = tmp_path / "test.txt"
    test_file.write_text(split("test")[0].prompt + "\n")
    overrides = ["epochs=1", "train.algorithm=reward_backprop", "sample.num_steps=3", "sample.eval_num_steps=3",
                 "sample.noise_level=0.0", "sample.same_latent=false", "backprop.grad_steps=2",
                 "sample.batch_size=2", "sample.group_size=1", "sample.num_batches_per_epoch=1",
                 "lora.rank=4", "lora.alpha=8", "train.ema=false", "train.learning_rate=1e-2",
                 "reward.weights={brightness: 1.0}", "reward.options={}", "reward.eval={}", "log.log_with=[]",
                 f"data.test_prompts={test_file}", f"log.output_dir={tmp_path / 'run'}", "log.export_merged=false"]
    _launch_two_processes(tmp_path, overrides, port=29519)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["reward_mean"] == ranks[1]["reward_mean"]
    a, b = load_file(str(tmp_path / "lora0.safetensors")), load_file(str(tmp_path / "lora1.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)
