"""Where a reward is decided: how much of its variance the SDE noise of each window of steps carries.

    python bench/reward_variance.py                                   # toy config, windows 0:2 0:3 2:9 5:9 and all
    python bench/reward_variance.py --windows 0:1 0:2 --prompts 32 --config configs/toy_fast_cps.yaml key=value ...

A GRPO policy gradient can only learn from the part of a reward's variance that its own actions,
the SDE steps' noise, cause; the part decided by the initial noise x_T is invisible to it. For each
of ``--prompts`` training prompts this draws ``--latents`` initial noises and, for each, ``--seeds``
rollouts with SDE noise only inside a window of steps (ODE elsewhere), and reports

* ``within``: the variance of the reward across SDE seeds at a fixed x_T (what the steps decide),
* ``total``: the variance over all rollouts of the prompt, and ``share`` = within / total,

averaged over prompts. A window whose ``within`` is close to the all-steps value carries the
reward's decisions, which is where Flow-GRPO-Fast's ``sample.window_size``/``window_range`` belong.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genrl.config import load_config_or_exit

if TYPE_CHECKING:  # the trainer (torch, diffusers) loads in seconds: imported once the command line is checked
    from genrl.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def parse_window(text: str, num_steps: int) -> tuple[int, int]:
    """``"a:b"`` -> (a, b); ``"all"`` -> every step."""
    if text == "all":
        return 0, num_steps
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise SystemExit(f"error: window {text!r} is not 'start:end' or 'all'") from None
    if not 0 <= lo < hi <= num_steps:
        raise SystemExit(f"error: window {text!r} must satisfy 0 <= start < end <= sample.num_steps={num_steps}")
    return lo, hi


def window_variance(trainer: Trainer, window: tuple[int, int], prompt_ids: list[int], latents: int,
                    seeds: int) -> dict[str, float]:
    """Mean reward, within-x_T variance, total variance and their ratio for one window of SDE steps."""
    import torch

    with torch.no_grad():
        return _window_variance(trainer, window, prompt_ids, latents, seeds)


def _window_variance(trainer: Trainer, window: tuple[int, int], prompt_ids: list[int], latents: int,
                     seeds: int) -> dict[str, float]:
    from genrl.generation import generate

    cfg, adapter = trainer.cfg, trainer.adapter
    sigmas = adapter.schedule(cfg.sample.num_steps).to(trainer.accelerator.device)
    means, within, total = [], [], []
    for p in prompt_ids:
        n = latents * seeds
        prompts = [trainer.train_set.prompts[p]] * n
        metadata = [trainer.train_set.metadata[p]] * n
        x_gens = trainer.rollouts.generators(*[(cfg.seed, "x_T", p, i // seeds) for i in range(n)])
        step_gens = trainer.rollouts.generators(*[(cfg.seed, "steps", p, i) for i in range(n)])
        with trainer.accelerator.autocast():
            images = generate(adapter, prompts, metadata, sigmas=sigmas, noise_generators=x_gens,
                              model=trainer.unwrapped, step_type=cfg.sample.step_type,
                              noise_level=cfg.sample.noise_level, window=window, step_generators=step_gens).media.tensor
        rewards = trainer.reward_fn(images, prompts, metadata).scores.float().cpu().numpy().reshape(latents, seeds)
        means.append(rewards.mean())
        within.append(rewards.var(axis=1).mean())
        total.append(rewards.var())
    w, t = float(np.mean(within)), float(np.mean(total))
    return {"window": f"{window[0]}:{window[1]}", "mean_reward": float(np.mean(means)), "within": w, "total": t,
            "share": w / t if t > 0 else float("nan")}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toy.yaml"))
    parser.add_argument("--windows", nargs="+", default=["0:2", "0:3", "2:9", "5:9", "all"])
    parser.add_argument("--prompts", type=int, default=16, help="training prompts drawn (fixed seed)")
    parser.add_argument("--latents", type=int, default=4, help="initial noises per prompt")
    parser.add_argument("--seeds", type=int, default=8, help="SDE noise seeds per initial noise")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options
    scratch = tempfile.mkdtemp(prefix="reward_variance-")  # the trainer wants an output dir; nothing is kept
    cfg = load_config_or_exit(args.config, [*args.overrides, "log.log_with=[]", f"log.output_dir={scratch}"])
    windows = [parse_window(w, cfg.sample.num_steps) for w in args.windows]  # checked before the trainer loads
    from genrl.trainer import Trainer

    trainer = Trainer(cfg)
    rng = np.random.default_rng(cfg.seed)
    count = min(args.prompts, len(trainer.train_set.prompts))
    prompt_ids = sorted(int(i) for i in rng.choice(len(trainer.train_set.prompts), count, replace=False))
    rows = [window_variance(trainer, w, prompt_ids, args.latents, args.seeds) for w in windows]
    print(f"{'window':>8} {'reward':>8} {'within':>8} {'total':>8} {'share':>6}")
    for r in rows:
        print(f"{r['window']:>8} {r['mean_reward']:8.3f} {r['within']:8.4f} {r['total']:8.4f} {r['share']:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
