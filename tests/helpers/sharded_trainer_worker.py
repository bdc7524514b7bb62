"""Run by tests/test_sharded_training.py under ``accelerate launch`` with 2 gloo processes: a short Flow-GRPO
run of the toy pipeline (replicated or sharded, as the launch and overrides say), then what each rank holds."""

import json
import sys
from pathlib import Path

from genrl.config import load_config
from genrl.trainer import Trainer
from genrl.trainer.sharding import is_sharded


def main(out: Path, overrides: list[str]) -> None:
    trainer = Trainer(load_config(None, overrides))
    trainer.train()
    rank = trainer.accelerator.process_index
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world": trainer.accelerator.num_processes, "sharded": is_sharded(trainer.unwrapped),
        "global_step": trainer.state.global_step}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
