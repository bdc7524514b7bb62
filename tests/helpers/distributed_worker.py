"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo on CPU).

Each rank samples one batch, scores it and writes what it saw; then the ranks train one epoch and
write their LoRA weights, which DDP must keep identical (and Adv-GRPO's discriminator weights, which
its gradient averaging must keep identical). A reward-backpropagation run only trains one epoch and writes its
LoRA weights, which the trainer's own gradient averaging must keep identical.
"""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from genrl.config import load_config
from genrl.models.lora import lora_state_dict
from genrl.trainer import Trainer


def main(out: Path, overrides: list[str]) -> None:
    trainer = Trainer(load_config(None, overrides))
    rank = trainer.accelerator.process_index
    if trainer.cfg.train.algorithm == "reward_backprop":  # no groups or advantages: only the update is checked
        record = trainer.algorithm.run_epoch(trainer, 0)
        save_file({k: v.contiguous() for k, v in lora_state_dict(trainer.unwrapped).items()},
                  str(out / f"lora{rank}.safetensors"))
        (out / f"rank{rank}.json").write_text(json.dumps({"world": trainer.accelerator.num_processes,
                                                          "reward_mean": record["reward/mean"]}))
        return
    indices = next(iter(trainer.sampler))
    batch = trainer.rollouts.sample_batch(0, 0, indices)
    metrics = trainer.score_epoch([batch])
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world": trainer.accelerator.num_processes, "indices": indices, "rewards": batch.rewards.tolist(),
        "advantages": batch.advantages.tolist(), "keep": batch.keep.tolist(), "metrics": metrics}))
    trainer.sampler.load_state_dict({"iteration": 0, "seed": trainer.sampler.seed})
    trainer.train()
    save_file({k: v.contiguous() for k, v in lora_state_dict(trainer.unwrapped).items()},
              str(out / f"lora{rank}.safetensors"))
    reward = getattr(trainer.algorithm, "reward", None)  # Adv-GRPO's discriminator
    if reward is not None:
        save_file({k: v.detach().contiguous() for k, v in reward.trainable_parameters().items()},
                  str(out / f"discriminator{rank}.safetensors"))
        (out / f"adv{rank}.json").write_text(json.dumps(trainer.algorithm.state_dict()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
