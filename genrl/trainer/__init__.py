"""The one training loop (accelerate) and its checkpoint, run-folder and metrics helpers."""

from rewards.seeding import derived_seed

from .lifecycle import RunInterrupted
from .loop import Trainer, TrainState

__all__ = ["RunInterrupted", "TrainState", "Trainer", "derived_seed"]
