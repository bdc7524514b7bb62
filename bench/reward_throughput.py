"""Reward throughput: images (or clips) scored per second, per batch size, for the rewards that run offline.

    python bench/reward_throughput.py                      # 2 CPU threads, batch sizes 1 and 32
    python bench/reward_throughput.py --batch-sizes 8 64 --threads 1

Real-architecture rewards whose weights cannot be downloaded here run on the toy CLIP / toy
detector or on tiny models of the same architecture built from configs, so the figures measure
the wrapper and preprocessing around a small model, not the cost of the full-size network.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-model builders the tests use


def offline_rewards(tmp: Path) -> dict[str, dict]:
    """Reward name -> build options that load without a network."""
    import torch
    from helpers.tiny_models import save_tiny_clap, save_tiny_clip, save_tiny_imagereward, save_tiny_vlm

    from rewards import AestheticMLP, build_reward

    save_tiny_clip(tmp / "clip", tmp / "clip")
    save_tiny_vlm(tmp / "vlm")
    save_tiny_clap(tmp / "clap")
    dim = build_reward("clip_score", model="toy").model.visual.output_dim
    torch.save(AestheticMLP(dim).state_dict(), tmp / "aesthetic.pth")
    return {
        "toy_verifier": {"mode": "partial"},
        "jpeg_compressibility": {},
        "brightness": {},
        "clip_score": {"model": "toy"},
        "hpsv2": {"model": "toy", "checkpoint": ""},
        "aesthetic": {"model": "toy", "pretrained": None, "mlp_path": str(tmp / "aesthetic.pth")},
        "pickscore (tiny CLIP)": {"name": "pickscore", "model": str(tmp / "clip"), "processor": str(tmp / "clip")},
        "dino_adversarial (toy tower)": {"name": "dino_adversarial", "backbone": "toy", "num_patches": 0},
        "reference_similarity (toy tower)": {"name": "reference_similarity", "backbone": "toy"},
        "artifact_classifier (toy)": {"name": "artifact_classifier", "detector": "toy"},
        "vlm_judge (tiny LLaVA)": {"name": "vlm_judge", "model": str(tmp / "vlm")},
        "imagereward (tiny BLIP)": {"name": "imagereward", **save_tiny_imagereward(tmp / "imagereward")},
        "clap (tiny, 1 s clips)": {"name": "clap", "model": str(tmp / "clap"), "sample_rate": 48_000},
    }


def measure(reward, batch_size: int, repeats: int) -> float:
    """Items per second of ``reward`` on toy scenes (or 1 s noise clips for audio rewards)."""
    import random

    import torch

    from rewards.toyworld.prompts import sample_specs, split
    from rewards.toyworld.render import render_batch

    specs = sample_specs(split("test"), batch_size, random.Random(0))
    prompts, metadata = [s.prompt for s in specs], [{"spec": s} for s in specs]
    if reward.modality == "audio":
        media = torch.randn(batch_size, 48_000) * 0.1
    else:
        media = torch.from_numpy(render_batch(specs, random.Random(1))).permute(0, 3, 1, 2).float() / 255
    reward(media, prompts, metadata)  # warm-up (lazy caches, first-call allocations)
    start = time.perf_counter()
    for _ in range(repeats):
        reward(media, prompts, metadata)
    return batch_size * repeats / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.threads < 1 or args.repeats < 1:
        parser.error("--batch-sizes, --threads and --repeats must be >= 1")
    import torch  # seconds to load: only once the command line is checked

    from rewards import build_reward

    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        for label, options in offline_rewards(Path(tmp)).items():
            options = dict(options)
            reward = build_reward(options.pop("name", label), **options)
            rates = {f"batch_{b}": round(measure(reward, b, args.repeats), 1) for b in args.batch_sizes}
            print(json.dumps({"reward": label, "items_per_s": rates, "threads": args.threads}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
