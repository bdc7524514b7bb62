"""How much signal one epoch's policy gradient carries: the gradient signal-to-noise ratio at the base policy.

    python bench/gradient_snr.py                                   # toy config, 40 epochs' gradients
    python bench/gradient_snr.py --epochs 20 --config configs/toy_fast_cps.yaml key=value ...

Each epoch is sampled and scored exactly as the trainer does (same prompts, windows and
advantages), and the gradient of its loss over every (batch, step) unit is taken at the *initial*
weights, with no update in between. Writing one epoch's gradient as ``g_e = s + n_e`` (``s`` the
expected gradient over prompts and noise, ``n_e`` the epoch's noise), the unbiased estimates

* ``|s|^2`` = the mean dot product ``g_i . g_j`` over pairs of distinct epochs (jackknife standard error),
* ``|n|^2`` = the mean ``|g_e|^2`` minus ``|s|^2``,

give the per-epoch ratio ``|s|^2 / |n|^2`` and the number of images whose averaged gradient would
have a signal-to-noise ratio of 1 (``images per epoch * |n|^2 / |s|^2``). When ``|s|^2`` is not
above two standard errors, only a lower bound on that number is reported. An optimizer that sees
fewer images than that over a whole run mostly follows noise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genrl.config import load_config_or_exit

if TYPE_CHECKING:  # torch and the trainer load in seconds: imported once the command line is checked
    import torch

    from genrl.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def epoch_gradient(trainer: Trainer, epoch: int) -> tuple[torch.Tensor, int]:
    """The flattened gradient of one epoch's loss at the current weights (float64), and its number of images.

    The epoch's batches come from the trainer's own sampler and rollouts, and every trained
    (batch, step) unit is back-propagated, as one optimizer step over the whole epoch would see it.
    """
    import torch

    from genrl.algorithms import LossContext

    batches = trainer.sample_epoch(epoch)
    trainer.score_epoch(batches)
    ctx = LossContext(trainer.adapter, trainer.models.model, trainer.models.reference)
    trainer.models.model.train()
    for p in trainer.models.params:
        p.grad = None
    for batch in batches:
        for position in trainer.algorithm.train_positions(batch):
            with trainer.accelerator.autocast():
                loss, _ = trainer.algorithm.loss(ctx, batch, position)
            loss.backward()
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double().cpu()
                      for p in trainer.models.params])
    for p in trainer.models.params:
        p.grad = None
    return grad, sum(len(b.prompts) for b in batches)


def signal_to_noise(grads: torch.Tensor, images_per_epoch: int) -> dict[str, float]:
    """Signal and noise power of per-epoch gradients ``grads`` (shape ``(E, P)``, ``E >= 2``), see the module doc."""
    e = grads.shape[0]
    if e < 2:
        raise ValueError("need the gradients of at least two epochs")
    gram = (grads.double() @ grads.double().T).numpy()
    pairs = list(itertools.combinations(range(e), 2))
    dots = np.array([gram[i, j] for i, j in pairs])
    norms = np.sqrt(np.diag(gram))
    signal = float(dots.mean())
    off_diagonal = gram.sum() - np.trace(gram)
    if e > 2:  # jackknife over epochs (the pairs share epochs, so they are not independent samples)
        row = gram.sum(1) - np.diag(gram)
        leave_one_out = (off_diagonal - 2 * row) / ((e - 1) * (e - 2))
        signal_se = float(np.sqrt((e - 1) / e * ((leave_one_out - leave_one_out.mean()) ** 2).sum()))
    else:
        signal_se = float("inf")
    noise = float(np.diag(gram).mean()) - signal
    resolved = signal > 2 * signal_se
    bound = max(signal, 0.0) + 2 * signal_se  # the signal is at most this (about 97.5 % one-sided)
    return {"epochs": e, "images_per_epoch": images_per_epoch, "signal": signal, "signal_se": signal_se,
            "noise": noise, "ratio_per_epoch": signal / noise, "mean_cosine": float(np.mean([gram[i, j] / (norms[i] * norms[j]) for i, j in pairs])),
            "resolved": resolved,
            "images_for_snr_1": images_per_epoch * noise / signal if resolved else float("nan"),
            "images_for_snr_1_at_least": images_per_epoch * noise / bound}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toy.yaml"))
    parser.add_argument("--epochs", type=int, default=40, help="epochs whose gradients are compared")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options
    if args.epochs < 2:
        parser.error("--epochs must be >= 2")
    scratch = tempfile.mkdtemp(prefix="gradient_snr-")  # the trainer wants an output dir; nothing is kept
    try:
        cfg = load_config_or_exit(args.config, [*args.overrides, "log.log_with=[]", f"log.output_dir={scratch}"])
        import torch

        from genrl.trainer import Trainer

        trainer = Trainer(cfg)
        grads, images = zip(*(epoch_gradient(trainer, epoch) for epoch in range(args.epochs)), strict=True)
        r = signal_to_noise(torch.stack(grads), images[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{r['epochs']} epochs x {r['images_per_epoch']} images: signal {r['signal']:.3e} (se {r['signal_se']:.1e}), "
          f"noise {r['noise']:.3e}, per-epoch ratio {r['ratio_per_epoch']:.4f}, mean cosine {r['mean_cosine']:.4f}")
    if r["resolved"]:
        print(f"images for a gradient SNR of 1: {r['images_for_snr_1']:.0f}")
    else:
        print(f"signal not resolved (<= 2 se): a gradient SNR of 1 needs at least {r['images_for_snr_1_at_least']:.0f} images")
    if args.json:
        args.json.write_text(json.dumps({"overrides": args.overrides, **r}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
