"""Pretrain the embedded toy audio pipeline (Stable Audio Open architecture) on the toy audio world.

    python scripts/pretrain_toy_audio.py                   # the shipped weights' recipe (a GPU is used if present)
    python scripts/pretrain_toy_audio.py vae_steps=100 steps=100 out_dir=/tmp/audio eval_every=0   # a quick trial
    python scripts/pretrain_toy_audio.py init_from=/tmp/audio steps=1000 out_dir=/tmp/audio2   # continue training
    python scripts/pretrain_toy_audio.py init_from=/tmp/audio continue_vae=true vae_decoder_only=true \
        vae_steps=3000 waveform_weight=10 steps=0 latent_pool=64 out_dir=/tmp/audio3   # a better decoder, same DiT

Two stages: the Oobleck VAE, then the DiT with its T5 and seconds conditioners. The run checkpoints its whole
state to ``<out_dir>.resume/`` every ``checkpoint_every`` steps: stopped or killed, the same command continues
where it left off (``fresh=true`` starts over). Any field of ``genrl.toy.pretrain_audio.AudioPretrainConfig`` can
be overridden as ``key=value``; a JSONL log goes next to out_dir.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from genrl.toy.pretrain import pretrain_main
    from genrl.toy.pretrain_audio import AudioPretrainConfig, pretrain_audio

    return pretrain_main(argv, __doc__, AudioPretrainConfig, pretrain_audio)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
