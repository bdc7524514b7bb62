"""Train the toy video-text model (video and text towers, contrastive projections, a fusion encoder with a
matching head) on the toy video world: the backbone of the PISCES rewards on the toy.

    python scripts/train_toy_video_text.py                    # reproduces the shipped weights
    python scripts/train_toy_video_text.py steps=100 out_dir=/tmp/video-text

Any field of ``genrl.toy.video_text.VideoTextTrainConfig`` can be overridden as ``key=value``; a JSONL log goes
next to out_dir.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from genrl.toy.pretrain import pretrain_main
    from genrl.toy.video_text import VideoTextTrainConfig, train_video_text

    return pretrain_main(argv, __doc__, VideoTextTrainConfig, train_video_text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
