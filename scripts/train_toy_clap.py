"""Train the toy CLAP (a transformers ClapModel at 8 kHz) contrastively on rendered clips of the toy audio world
and their prompts: the CLAP score and the frame embedding of the distributional rewards on the toy.

    python scripts/train_toy_clap.py                 # reproduces the shipped weights (8 minutes on 2 CPU cores)
    python scripts/train_toy_clap.py steps=100 out_dir=/tmp/toy-clap

Any field of ``genrl.toy.clap.ClapTrainConfig`` can be overridden as ``key=value``; a JSONL log goes next to
out_dir.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from genrl.toy.clap import ClapTrainConfig, train_toy_clap
    from genrl.toy.pretrain import pretrain_main

    return pretrain_main(argv, __doc__, ClapTrainConfig, train_toy_clap)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
