"""Pretrain the embedded toy SD3 pipeline on the procedural renderer.

    python scripts/pretrain_toy.py                       # reproduces the shipped weights (a GPU is used if present)
    python scripts/pretrain_toy.py steps=300 vae_steps=200 out_dir=/tmp/toy eval_every=0   # a quick trial
    python scripts/pretrain_toy.py init_from=/tmp/toy vae_steps=0 steps=1000 out_dir=/tmp/toy2  # continue training

The run checkpoints its whole state to ``<out_dir>.resume/`` every ``checkpoint_every`` steps:
stopped or killed, the same command continues where it left off (``fresh=true`` starts over).
Any field of ``genrl.toy.pretrain.PretrainConfig`` can be overridden as ``key=value``.
The run is deterministic for a fixed seed, device and thread count; a JSONL log goes next to out_dir.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from genrl.toy.pretrain import PretrainConfig, pretrain, pretrain_main

    return pretrain_main(argv, __doc__, PretrainConfig, pretrain)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
