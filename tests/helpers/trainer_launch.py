"""Launching the trainer under ``accelerate launch`` with 2 (or 1) gloo processes for the distributed tests: the
short Flow-GRPO run of ``sharded_trainer_worker.py``, its settings, and its records."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "helpers" / "sharded_trainer_worker.py"
LORA = Path("final") / "lora" / "pytorch_lora_weights.safetensors"

#: a run of 3-step rollouts, 2 images per process in groups of 4, LoRA rank 4 at lr 1e-2 with EMA and a KL term,
#: evaluated and checkpointed every epoch
COMMON = ["sample.num_steps=3", "sample.eval_num_steps=3", "sample.batch_size=2", "sample.group_size=4",
          "sample.num_batches_per_epoch=1", "sample.eval_batch_size=1", "sample.eval_images_per_prompt=1",
          "sample.window_size=0", "sample.window_range=null", "train.timestep_fraction=0.67",
          "lora.rank=4", "lora.alpha=8", "train.learning_rate=1e-2", "train.ema=true", "train.ema_update_every=1",
          "train.beta=0.04", "log.log_with=[]", "log.eval_every=1", "log.save_every=1", "time_budget_minutes=0"]


def launch(out: Path, config: str | None, port: int, *overrides: str, processes: int = 2,
           check: bool = True) -> subprocess.CompletedProcess:
    """``accelerate launch`` the worker with ``configs/accelerate/<config>`` (None: ``--multi_gpu``); the worker
    writes ``out/rank<i>.json``. With ``check`` the launch must succeed (its stderr's tail is shown if not)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    where = ["--config_file", str(ROOT / "configs" / "accelerate" / config)] if config else ["--multi_gpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *where, "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(WORKER), str(out), *overrides]
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, check=False)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def records(run: Path) -> list[dict]:
    """The run's ``metrics.jsonl``."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def rank_reports(out: Path, processes: int = 2) -> list[dict]:
    """What each rank's worker reported (world size, sharded, optimizer steps)."""
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
