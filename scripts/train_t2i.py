"""Reward-based post-training of a text-to-image model.

    accelerate launch scripts/train_t2i.py                                  # Flow-GRPO on the toy world (CPU)
    accelerate launch scripts/train_t2i.py --config configs/sd3.5m_geneval.yaml
    accelerate launch scripts/train_t2i.py sample.batch_size=4 epochs=5     # dotted overrides
    accelerate launch scripts/train_t2i.py --resume                         # from the newest checkpoint
    accelerate launch scripts/train_t2i.py --resume log.output_dir=runs/a   # newest of that run
    accelerate launch scripts/train_t2i.py --resume outputs/x/checkpoints/checkpoint-000010

Every key of ``genrl.config.ExperimentConfig`` can be overridden as ``key=value``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from genrl.config import ConfigError, load_config
from genrl.trainer import Trainer

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"


def parse_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """The config file and the ``key=value`` overrides (``resume=...`` included) of a command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None,
                        help="YAML config (default: configs/toy.yaml)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="resume from the newest checkpoint of log.output_dir, or from the given one")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sample.batch_size=4")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options
    overrides = list(args.overrides)
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value`: the optional value swallowed the first override
        overrides.insert(0, args.resume)
        args.resume = "latest"
    return args.config, overrides + ([f"resume={args.resume}"] if args.resume else [])


def main(argv: list[str]) -> int:
    config, overrides = parse_args(argv)
    # libraries warn; genrl and rewards also report progress (resume, export, reward servers)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("genrl", "rewards"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        trainer = Trainer(load_config(config, overrides))
    except ConfigError as err:  # a bad key, value or prompt source: one line naming it, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
