"""Train the toy CLIP (open_clip architecture) contrastively on rendered scenes and their prompts.

    python scripts/train_toy_clip.py                 # reproduces the shipped weights
    python scripts/train_toy_clip.py steps=100 out_dir=/tmp/toy-clip

Any field of ``genrl.toy.clip.ClipTrainConfig`` can be overridden as ``key=value``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from genrl.toy.clip import ClipTrainConfig, train_toy_clip


def main(argv: list[str]) -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(ClipTrainConfig), OmegaConf.from_dotlist(argv))
    cfg = ClipTrainConfig(**OmegaConf.to_container(cfg))
    log_path = Path(cfg.out_dir).with_name(Path(cfg.out_dir).name + "-train.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as fh:
        def log(record: dict) -> None:
            print(json.dumps(record), flush=True)
            fh.write(json.dumps(record) + "\n")
        train_toy_clip(cfg, log)


if __name__ == "__main__":
    main(sys.argv[1:])
