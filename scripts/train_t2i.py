"""Reward-based post-training of a text-to-image model.

    accelerate launch --config_file configs/accelerate/single_process.yaml scripts/train_t2i.py  # toy world
    accelerate launch scripts/train_t2i.py                                  # the same, with accelerate's defaults
    accelerate launch scripts/train_t2i.py --config configs/sd3.5m_pickscore.yaml
    accelerate launch scripts/train_t2i.py sample.batch_size=4 epochs=5     # dotted overrides
    accelerate launch scripts/train_t2i.py --resume                         # from the newest checkpoint
    accelerate launch scripts/train_t2i.py --resume log.output_dir=runs/a   # newest of that run
    accelerate launch scripts/train_t2i.py --resume outputs/x/checkpoints/checkpoint-000010
    accelerate launch scripts/train_t2i.py --overwrite                      # start log.output_dir's run over

Every key of ``genrl.config.ExperimentConfig`` can be overridden as ``key=value``. The command line
and the config are checked before torch and the models load: a bad key, value or file ends the run
with one ``error: ...`` line and exit status 2, in a fraction of a second with ``python
scripts/train_t2i.py`` (one process; ``accelerate launch`` adds its own start-up and traceback).
``configs/accelerate/single_process.yaml`` sets what accelerate otherwise fills in with a warning.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from genrl.config import ConfigError, exit_on_config_error, load_config_or_exit

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"


def parse_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """The config file and the ``key=value`` overrides (``resume=...`` included) of a command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None,
                        help="YAML config (default: configs/toy.yaml)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="resume from the newest checkpoint of log.output_dir, or from the given one")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a log.output_dir that holds a run, deleting its records first")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sample.batch_size=4")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options
    overrides = list(args.overrides)
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value`: the optional value swallowed the first override
        overrides.insert(0, args.resume)
        args.resume = "latest"
    overrides += ["log.overwrite=true"] if args.overwrite else []
    return args.config, overrides + ([f"resume={args.resume}"] if args.resume else [])


def main(argv: list[str]) -> int:
    """Train; a bad command line or config ends it with one ``error: ...`` line and exit status 2."""
    config, overrides = parse_args(argv)
    cfg = load_config_or_exit(config, overrides)  # a bad key, value or file fails here, before torch loads
    # libraries warn; genrl and rewards also report progress (resume, export, reward servers)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("genrl", "rewards"):
        logging.getLogger(name).setLevel(logging.INFO)
    from genrl.trainer import Trainer  # torch, diffusers and the models: seconds, so only for a valid config

    try:
        Trainer(cfg).train()
    except ConfigError as err:  # a bad prompt source, a run folder in use, a damaged checkpoint: one line
        exit_on_config_error(err)
    except KeyboardInterrupt as stop:  # a RunInterrupted says what was saved and how to continue, and its status
        if os.environ.get("RANK", "0") == "0":
            print(stop or "interrupted", file=sys.stderr)
        return getattr(stop, "exit_code", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
