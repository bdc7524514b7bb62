"""The one training loop (accelerate) and its checkpoint and metrics helpers."""

from .loop import Trainer, TrainState, derived_seed

__all__ = ["TrainState", "Trainer", "derived_seed"]
