"""Pretrain the embedded toy SD3 pipeline on the procedural renderer.

    python scripts/pretrain_toy.py                       # reproduces the shipped weights
    python scripts/pretrain_toy.py steps=200 restart_steps=0 out_dir=/tmp/toy eval_every=0   # a quick trial
    python scripts/pretrain_toy.py init_from=/tmp/toy restart_steps=0 steps=1000 out_dir=/tmp/toy2  # continue

Any field of ``genrl.toy.pretrain.PretrainConfig`` can be overridden as ``key=value``.
The run is deterministic for a fixed seed and thread count; a JSONL log goes next to out_dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from genrl.toy.pretrain import PretrainConfig, pretrain


def main(argv: list[str]) -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(PretrainConfig), OmegaConf.from_dotlist(argv))
    cfg = PretrainConfig(**OmegaConf.to_container(cfg))
    out = Path(cfg.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    pretrain(cfg, log_path=out.with_name(out.name + "-pretrain.jsonl"))


if __name__ == "__main__":
    main(sys.argv[1:])
