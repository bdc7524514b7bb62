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
from dataclasses import fields
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    from genrl.toy.pretrain import PretrainConfig, PretrainError, pretrain

    try:
        overrides = OmegaConf.from_dotlist(argv)
        cfg = OmegaConf.merge(OmegaConf.structured(PretrainConfig), overrides)
        cfg = PretrainConfig(**OmegaConf.to_container(cfg))
    except (OmegaConfBaseException, PretrainError, ValueError) as err:
        known = ", ".join(f.name for f in fields(PretrainConfig))
        print(f"error: {str(err).splitlines()[0]} (settings: {known})", file=sys.stderr)
        return 2
    out = Path(cfg.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pretrain(cfg, log_path=out.with_name(out.name + "-pretrain.jsonl"))
    except PretrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
