"""Pretrain the embedded toy edit pipeline (FLUX.1 Kontext architecture) on the toy edit world.

    python scripts/pretrain_toy_edit.py                    # stage 1 of the shipped weights (a GPU is used if present)
    python scripts/pretrain_toy_edit.py steps=200 out_dir=/tmp/edit eval_every=0   # a quick trial
    python scripts/pretrain_toy_edit.py init_from=/tmp/edit steps=1000 out_dir=/tmp/edit2   # continue training

The shipped weights are six runs: this default (3,000 steps), then five continuations with instruction noise,
failed edits and family weights; the commands are in docs/toy-edit-world.md ("Pretraining the toy edit pipeline").

The VAE is the toy SD3 pipeline's (``vae_from``). The run checkpoints its whole state to ``<out_dir>.resume/``
every ``checkpoint_every`` steps: stopped or killed, the same command continues where it left off
(``fresh=true`` starts over). Any field of ``genrl.toy.pretrain_edit.EditPretrainConfig`` can be overridden as
``key=value``; a JSONL log goes next to out_dir.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from genrl.toy.pretrain import pretrain_main
    from genrl.toy.pretrain_edit import EditPretrainConfig, pretrain_edit

    return pretrain_main(argv, __doc__, EditPretrainConfig, pretrain_edit)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
