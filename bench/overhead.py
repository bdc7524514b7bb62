"""Overhead ratio of one training epoch.

    python bench/overhead.py                               # the toy config, as scripts/train_t2i.py runs it
    python bench/overhead.py --config configs/toy_fast_cps.yaml key=value ...

ratio = wall time of one epoch (sampling, decoding, rewards, advantages, updates)
        / time of the transformer calls that epoch must make, replayed in isolation in the same run
          (the sampling forwards without gradients and the training forward+backward passes).
A ratio of 1 means everything but the denoiser is free. Also reports peak memory (CUDA allocator
peak on a GPU, process peak RSS on a CPU). The first epoch is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from genrl.config import load_config_or_exit

if TYPE_CHECKING:  # the trainer (torch, diffusers) loads in seconds: imported once the command line is checked
    from genrl.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_epoch(trainer: Trainer, epoch: int) -> tuple[float, list]:
    _sync()
    start = time.perf_counter()
    batches = trainer.sample_epoch(epoch)
    trainer.score_epoch(batches)
    trainer.optimize_epoch(batches)
    _sync()
    return time.perf_counter() - start, batches


def time_transformer_calls(trainer: Trainer, batches: list) -> float:
    """Replay exactly the transformer calls of an epoch: T sampling forwards per batch, then one
    forward+backward per trained (batch, step) unit (plus a reference forward when beta > 0)."""
    import torch

    cfg, adapter, acc = trainer.cfg, trainer.adapter, trainer.accelerator
    total = 0.0
    for batch in batches:
        x = batch.trajectory.states[:, 0] if batch.trajectory.steps else batch.trajectory.final
        sigmas = batch.sigmas
        _sync()
        start = time.perf_counter()
        with torch.no_grad(), acc.autocast():
            for j in range(cfg.sample.num_steps):
                adapter.velocity(x, sigmas[j], batch.cond, model=trainer.unwrapped)
        for pos in trainer.algorithm.train_positions(batch):
            with acc.autocast():
                v = adapter.velocity(batch.trajectory.states[:, pos], sigmas[batch.trajectory.steps[pos]],
                                     batch.cond, model=trainer.models.model)
            acc.backward(v.float().square().mean())
            if trainer.models.reference is not None:
                with torch.no_grad(), trainer.models.reference.active() as ref, acc.autocast():
                    adapter.velocity(batch.trajectory.states[:, pos], sigmas[batch.trajectory.steps[pos]],
                                     batch.cond, model=ref)
        _sync()
        total += time.perf_counter() - start
        trainer.models.optimizer.zero_grad(set_to_none=True)
    return total


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toy.yaml"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    cfg = load_config_or_exit(args.config, ["log.log_with=[]", "log.output_dir=/tmp/genrl-bench", *args.overrides])
    import torch

    from genrl.trainer import Trainer

    trainer = Trainer(cfg)
    time_epoch(trainer, 0)
    rows = []
    for epoch in range(1, args.epochs + 1):
        wall, batches = time_epoch(trainer, epoch)
        model_time = time_transformer_calls(trainer, batches)
        rows.append({"epoch": epoch, "epoch_s": round(wall, 3), "transformer_s": round(model_time, 3),
                     "overhead_ratio": round(wall / model_time, 3)})
        print(json.dumps(rows[-1]), flush=True)
    mean_ratio = sum(r["epoch_s"] for r in rows) / sum(r["transformer_s"] for r in rows)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    print(json.dumps({"config": args.config, "device": device, "overhead_ratio": round(mean_ratio, 3),
                      "epoch_s": round(sum(r["epoch_s"] for r in rows) / len(rows), 3),
                      "peak_memory_mb": round(peak_memory_mb(), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
