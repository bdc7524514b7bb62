"""Throughput of training: images per second per process for rollouts and for updates, and peak memory.

    python bench/throughput.py                                              # the toy config, one process
    accelerate launch --multi_gpu --num_processes 2 bench/throughput.py     # 2 processes (gloo on a CPU)
    accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 2 bench/throughput.py
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 2 bench/throughput.py
    python bench/throughput.py --config configs/sd3.5m_pickscore.yaml model.pretrained=/tmp/sd35m-random

Rollout time is ``sample_epoch`` (the denoising steps, decoding and scoring each batch); update time is
gathering rewards into advantages plus the inner epochs of loss, backward and optimizer steps. Each epoch's
times are the slowest process's (they wait for each other at every collective). The first epoch is a warm-up
and is not timed. One JSON line per epoch, then a summary; ``bench/build_random_sd3.py`` makes a random
SD3.5-M-shaped pipeline to point ``model.pretrained`` at.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from overhead import ROOT, _sync, peak_memory_mb

from genrl.config import load_config_or_exit


def timed_epoch(trainer, epoch: int) -> tuple[float, float, int]:
    """(rollout seconds, update seconds, images) of one epoch on this process."""
    _sync()
    start = time.perf_counter()
    batches = trainer.sample_epoch(epoch)
    _sync()
    sampled = time.perf_counter()
    trainer.score_epoch(batches)
    trainer.optimize_epoch(batches)
    _sync()
    return sampled - start, time.perf_counter() - sampled, sum(len(b.prompts) for b in batches)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toy.yaml"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    cfg = load_config_or_exit(args.config, ["log.log_with=[]", "log.output_dir=/tmp/genrl-bench-throughput",
                                            "log.overwrite=true", *args.overrides])
    import torch

    from genrl.trainer import Trainer

    trainer = Trainer(cfg)
    acc = trainer.accelerator
    timed_epoch(trainer, 0)
    rollout = update = 0.0
    images = 0
    for epoch in range(1, args.epochs + 1):
        times = torch.tensor(timed_epoch(trainer, epoch)[:2], device=acc.device)
        r, u = acc.reduce(times, "max").tolist()  # the slowest process sets the pace
        n = cfg.sample.batch_size * cfg.sample.num_batches_per_epoch
        rollout, update, images = rollout + r, update + u, images + n
        if acc.is_main_process:
            print(json.dumps({"epoch": epoch, "rollout_s": round(r, 3), "update_s": round(u, 3),
                              "images_per_process": n}), flush=True)
    peak = torch.tensor([peak_memory_mb()], device=acc.device)
    peak = acc.reduce(peak, "max").item()
    if acc.is_main_process:
        device = (torch.cuda.get_device_name() if torch.cuda.is_available()
                  else f"cpu x{torch.get_num_threads()} threads per process")
        print(json.dumps({
            "config": args.config, "device": device, "processes": acc.num_processes, "sharding": trainer.sharding,
            "deepspeed_zero_stage": trainer.models.zero_stage,
            "rollout_images_per_s_per_process": round(images / rollout, 2),
            "update_images_per_s_per_process": round(images / update, 2),
            "epoch_images_per_s_total": round(acc.num_processes * images / (rollout + update), 2),
            "peak_memory_mb_per_process": round(peak, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
