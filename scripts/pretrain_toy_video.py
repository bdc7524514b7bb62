"""Pretrain the embedded toy video pipeline (Wan2.1 architecture) on the toy video world.

    python scripts/pretrain_toy_video.py                   # the shipped weights' recipe (a GPU is used if present)
    python scripts/pretrain_toy_video.py vae_steps=100 steps=100 out_dir=/tmp/video eval_every=0   # a quick trial
    python scripts/pretrain_toy_video.py init_from=/tmp/video steps=1000 out_dir=/tmp/video2   # continue training

Two stages: Wan's causal 3-D VAE, then the transformer with its UMT5 text tower. The run checkpoints its whole
state to ``<out_dir>.resume/`` every ``checkpoint_every`` steps: stopped or killed, the same command continues
where it left off (``fresh=true`` starts over). Any field of ``genrl.toy.pretrain_video.VideoPretrainConfig`` can
be overridden as ``key=value``; a JSONL log goes next to out_dir.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from genrl.toy.pretrain import pretrain_main
    from genrl.toy.pretrain_video import VideoPretrainConfig, pretrain_video

    return pretrain_main(argv, __doc__, VideoPretrainConfig, pretrain_video)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
