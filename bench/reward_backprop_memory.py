"""Peak memory and time of one reward-backpropagation update against K (the steps that keep gradients), with and
without activation checkpointing.

Each setting runs in a fresh process (peak memory only rises within one): the trainer is built from
``configs/toy_backprop.yaml`` (or ``--config``), a batch is generated without gradients (the baseline: weights,
sampling activations, allocator pools), then one epoch is trained, and the process reports how far the training
epoch raised its peak memory over the baseline: the cost of the kept steps' graph. On a CPU the peak is the
resident set (``ru_maxrss``), on a GPU ``torch.cuda.max_memory_allocated``.

    python bench/reward_backprop_memory.py                     # K = 1, 2, 5, 10 on the toy pipeline
    python bench/reward_backprop_memory.py --steps 1 10 --batch-size 32 model.pretrained=/path/to/sd3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _peak_bytes(device) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(config: str, overrides: list[str]) -> dict:
    """One setting, in this process: train a warm-up epoch, then one measured epoch."""
    import torch

    from genrl.config import load_config
    from genrl.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [*overrides, f"log.output_dir={tmp}/run", "log.log_with=[]", "train.ema=false"])
        trainer = Trainer(cfg)
        device = trainer.accelerator.device
        indices = next(iter(trainer.sampler))
        with torch.no_grad():  # the baseline: the same batch sampled without a graph
            trainer.rollouts.generate([trainer.train_set.prompts[i] for i in indices],
                                      [trainer.train_set.metadata[i] for i in indices], indices, "bench",
                                      sigmas=trainer.adapter.schedule(cfg.sample.num_steps).to(device),
                                      noise_generators=trainer.rollouts.generators(*[(b,) for b in indices]),
                                      model=trainer.unwrapped)
        before = _peak_bytes(device)
        started = time.perf_counter()
        trainer.algorithm.run_epoch(trainer, 0)
        seconds = time.perf_counter() - started
        return {"peak_rise_mb": (_peak_bytes(device) - before) / 2**20, "epoch_s": seconds,
                "peak_mb": _peak_bytes(device) / 2**20, "device": device.type}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toy_backprop.yaml"))
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10], help="values of K")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", help="write the table here as JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: a JSON list of overrides, measured here
    parser.add_argument("overrides", nargs="*", help="config key=value overrides for every setting")
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.config, json.loads(args.one))))
        return
    rows = []
    for k in args.steps:
        for checkpoint in (True, False):
            overrides = [*args.overrides, f"backprop.grad_steps={k}", f"backprop.checkpoint={str(checkpoint).lower()}",
                         f"sample.batch_size={args.batch_size}", "sample.num_batches_per_epoch=1"]
            out = subprocess.run([sys.executable, __file__, "--config", args.config, "--one", json.dumps(overrides)],
                                 capture_output=True, text=True, check=True)
            row = {"K": k, "checkpoint": checkpoint, **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"K={k:3d} checkpoint={checkpoint!s:5s} peak rise {row['peak_rise_mb']:8.1f} MB  "
                  f"epoch {row['epoch_s']:.2f} s  ({row['device']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
