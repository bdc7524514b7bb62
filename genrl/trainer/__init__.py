"""The one training loop (accelerate) and its checkpoint and metrics helpers."""

from genrl.utils.seeding import derived_seed

from .loop import Trainer, TrainState

__all__ = ["TrainState", "Trainer", "derived_seed"]
