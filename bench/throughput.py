"""Throughput of training: images per second per process for rollouts and for updates, and peak memory.

    python bench/throughput.py                                              # the toy config, one process
    accelerate launch --multi_gpu --num_processes 2 bench/throughput.py     # 2 processes (gloo on a CPU)
    accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 2 bench/throughput.py
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 2 bench/throughput.py
    python bench/throughput.py --config configs/sd3.5m_pickscore.yaml model.pretrained=/tmp/sd35m-random

Rollout time is ``sample_epoch`` (the denoising steps, decoding and scoring each batch); update time is
gathering rewards into advantages plus the inner epochs of loss, backward and optimizer steps. Each epoch's
times are the slowest process's (they wait for each other at every collective). The first epoch is a warm-up
and is not timed; it is run under torch's ``FlopCounterMode``, which counts the FLOPs of the rollout and of the
update (matrix multiplications, convolutions and attention, forward and backward: the reference policy's
forwards included, the optimizer's elementwise work not). Every epoch has the same shapes, so the timed epochs'
achieved TFLOP/s follow, and on a GPU with a known dense bf16 peak (or ``--peak-tflops``) the MFU of the update
(the train step) and of the rollout. One JSON line per epoch, then a summary; ``bench/build_random_sd3.py`` makes a random
SD3.5-M-shaped pipeline to point ``model.pretrained`` at.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, also when run by path from elsewhere
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


#: dense (not sparse) bf16 tensor-core peak in TFLOP/s of the SXM parts, from the vendors' data sheets: MFU's
#: denominator, matched against ``torch.cuda.get_device_name()``
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "B200": 2250.0}


def counted_epoch(trainer, epoch: int) -> tuple[float, float]:
    """FLOPs of one epoch's rollout and of its update on this process, as torch's ``FlopCounterMode`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        batches = trainer.sample_epoch(epoch)
    rollout = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        trainer.score_epoch(batches)
        trainer.optimize_epoch(batches)
    return float(rollout), float(counter.get_total_flops())


def peak_tflops(device_name: str | None, given: float | None) -> float | None:
    """The peak MFU is measured against: ``given``, else the table's entry for the GPU, else None."""
    if given is not None:
        return given
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if device_name and k in device_name), None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toy.yaml"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for MFU (default: the dense bf16 peak of a known GPU)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak-tflops must be > 0")
    cfg = load_config_or_exit(args.config, ["log.log_with=[]", "log.output_dir=/tmp/genrl-bench-throughput",
                                            "log.overwrite=true", *args.overrides])
    import torch

    from genrl.trainer import Trainer

    trainer = Trainer(cfg)
    acc = trainer.accelerator
    rollout_flops, update_flops = counted_epoch(trainer, 0)  # the warm-up epoch
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
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        device = gpu or f"cpu x{torch.get_num_threads()} threads per process"
        epochs = args.epochs
        rollout_tflops = rollout_flops * epochs / rollout / 1e12  # per process: its FLOPs over the slowest's time
        update_tflops = update_flops * epochs / update / 1e12
        peak_value = peak_tflops(gpu, args.peak_tflops)
        print(json.dumps({
            "config": args.config, "device": device, "processes": acc.num_processes, "sharding": trainer.sharding,
            "deepspeed_zero_stage": trainer.models.zero_stage,
            "rollout_images_per_s_per_process": round(images / rollout, 2),
            "update_images_per_s_per_process": round(images / update, 2),
            "epoch_images_per_s_total": round(acc.num_processes * images / (rollout + update), 2),
            "peak_memory_mb_per_process": round(peak, 1),
            "rollout_tflop_per_epoch_per_process": round(rollout_flops / 1e12, 4),
            "update_tflop_per_epoch_per_process": round(update_flops / 1e12, 4),
            "rollout_tflops_per_process": round(rollout_tflops, 4),
            "update_tflops_per_process": round(update_tflops, 4),
            "peak_tflops": peak_value,
            "rollout_mfu": None if peak_value is None else round(rollout_tflops / peak_value, 4),
            "update_mfu": None if peak_value is None else round(update_tflops / peak_value, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
