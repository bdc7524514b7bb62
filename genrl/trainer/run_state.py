"""The checkpoint service: the run's counters and every object saved with a checkpoint, written and read
through accelerate's ``save_state`` / ``load_state`` hooks, and the resume of a planned checkpoint."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genrl.config import ConfigError
from genrl.models.lora import load_lora_state_dict, lora_state_dict

from .checkpoints import TRAINER_STATE_FILE
from .deepspeed_zero import DEEPSPEED_LATEST_FILE, LOAD_STATE_KWARGS, SAVE_STATE_KWARGS
from .lifecycle import checkpoint_world
from .model_state import ModelState
from .sharding import load_sharded, save_sharded

logger = logging.getLogger(__name__)

SHARDED_DIR = "sharded"  # a sharded denoiser's and optimizer's torch distributed checkpoint, in a genrl checkpoint


class TrainState:
    """Epochs completed, optimizer steps taken, images generated and training time; checkpointed with the rest,
    with the processes and per-process batch that wrote the checkpoint (a resume on another number of processes
    checks them: :func:`genrl.trainer.lifecycle.checkpoint_world`)."""

    def __init__(self, num_processes: int = 1, batch_size: int = 1) -> None:
        self.epoch = 0
        self.global_step = 0
        self.samples = 0  # training images generated, all processes
        self.train_seconds = 0.0  # wall time of sampling, rewards and updates (evaluation excluded)
        self.num_processes, self.batch_size = num_processes, batch_size  # this run's, never loaded

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step, "samples": self.samples,
                "train_seconds": self.train_seconds, "num_processes": self.num_processes,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.samples, self.train_seconds = int(state.get("samples", 0)), float(state.get("train_seconds", 0.0))


class CheckpointedState:
    """What a checkpoint holds besides accelerate's optimizer, scheduler and RNG states: named objects with
    ``state_dict`` / ``load_state_dict`` (the sampler, the counters, the EMA, an algorithm's own state) in one
    file loaded with ``weights_only=True`` (accelerate's ``register_for_checkpointing`` would unpickle them
    with ``weights_only=False``), and the LoRA adapter(s) instead of a copy of the frozen base model."""

    def __init__(self, accelerator: Accelerator, models: ModelState, objects: dict[str, Any]) -> None:
        self.accelerator, self.models = accelerator, models
        self.objects = dict(objects)
        if models.ema is not None:
            self.objects["ema"] = models.ema
        if models.sharded:  # not prepared by accelerate, so not in its states
            self.objects["lr_scheduler"] = models.lr_scheduler
        self.loading: str | None = None  # the checkpoint file being loaded, which a resume error names
        deepspeed = models.zero_stage is not None
        #: what ``accelerator.save_state`` / ``load_state`` are called with for this run's checkpoints
        self.save_kwargs = dict(SAVE_STATE_KWARGS) if deepspeed else {}
        self.load_kwargs = dict(LOAD_STATE_KWARGS) if deepspeed else {}
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)

    def add(self, name: str, obj: Any) -> None:
        """Save ``obj.state_dict()`` with every checkpoint and restore it on resume (call before training)."""
        if name in self.objects:
            raise ValueError(f"a checkpointed object is already named {name!r}")
        self.objects[name] = obj

    @staticmethod
    def lora_file(adapter: str) -> str:
        return "lora.safetensors" if adapter == "default" else f"lora-{adapter}.safetensors"

    def _save_hook(self, models, weights, output_dir) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            states = {name: obj.state_dict() for name, obj in self.objects.items()}
            if self.models.sharded and "ema" in states:  # sharded shadow weights: each process saves its shards
                states["ema"] = {k: v for k, v in states["ema"].items() if k != "shadow_params"}
            torch.save(states, os.path.join(output_dir, TRAINER_STATE_FILE))
        if self.models.sharded:  # every process writes its shards of the denoiser, optimizer state and EMA
            save_sharded(os.path.join(output_dir, SHARDED_DIR), self.models.model, self.models.optimizer,
                         extra=self._sharded_ema())
            return
        if not self.models.cfg.lora.enabled:
            return
        model = self.models.unwrapped
        if acc.is_main_process:
            for adapter in model.peft_config:  # every adapter, e.g. DiffusionNFT's old policy too
                save_file(lora_state_dict(model, adapter), os.path.join(output_dir, self.lora_file(adapter)))
        if weights:
            weights.pop()

    def _load_hook(self, models, input_dir) -> None:
        path = self.loading = os.path.join(input_dir, TRAINER_STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{input_dir} is not a genrl checkpoint ({TRAINER_STATE_FILE} missing)")
        states = torch.load(path, map_location="cpu", weights_only=True)
        missing = [name for name in self.objects if name not in states]
        if missing:
            raise KeyError(f"checkpoint {input_dir} has no state for {missing[0]!r}; was it written by another "
                           "algorithm or configuration?")
        if self.models.sharded and "ema" in states:  # its shadow weights are in the sharded checkpoint
            states["ema"]["shadow_params"] = self.models.ema.shadow_params
        for name, obj in self.objects.items():
            obj.load_state_dict(states[name])
        if self.models.ema is not None:
            self.models.ema.to(self.models.ema_device)
        if self.models.sharded:
            path = self.loading = os.path.join(input_dir, SHARDED_DIR)
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{input_dir} was written without model.sharding=fsdp ({SHARDED_DIR}/ "
                                        "missing); resume it with the sharding it was written with")
            load_sharded(path, self.models.model, self.models.optimizer, extra=self._sharded_ema())
        elif os.path.isdir(os.path.join(input_dir, SHARDED_DIR)):
            raise FileNotFoundError(f"{input_dir} holds a sharded denoiser (model.sharding=fsdp); resume it sharded")
        elif self.models.cfg.lora.enabled:
            if models:  # accelerate would load the model's full weights next (DeepSpeed's engine is not listed)
                models.pop()
            model = self.models.unwrapped
            for adapter in model.peft_config:
                path = self.loading = os.path.join(input_dir, self.lora_file(adapter))
                load_lora_state_dict(model, load_file(path), adapter)  # copied onto the weights' device
        self.loading = None  # accelerate loads the optimizer, scheduler and RNG states next

    def _check_deepspeed_checkpoint(self, path: Path) -> None:
        """A DeepSpeed checkpoint resumes only under DeepSpeed, on the processes that wrote it (ZeRO partitions the
        optimizer state per process, and DeepSpeed does not re-partition it); another checkpoint not under it.
        Checked before ``load_state``, which hands the engine its files before genrl's hook runs."""
        written_by_deepspeed = (path / DEEPSPEED_LATEST_FILE).is_file()
        if written_by_deepspeed != (self.models.zero_stage is not None):
            how = "under DeepSpeed" if written_by_deepspeed else "without DeepSpeed"
            raise ConfigError(f"cannot resume from {path}: it was written {how}; resume it with the accelerate "
                              "config it was written with")
        world = checkpoint_world(path)
        if written_by_deepspeed and world is not None and world[0] != self.accelerator.num_processes:
            raise ConfigError(f"cannot resume from {path}: it was written by {world[0]} DeepSpeed processes and ZeRO "
                              f"partitions the optimizer state per process; resume it on {world[0]} (DDP and FSDP2 "
                              "checkpoints resume on any number)")

    def _sharded_ema(self) -> dict[str, torch.Tensor]:
        """The EMA's shadow weights by position, for the sharded checkpoint (loaded in place)."""
        ema = self.models.ema
        return {} if ema is None else {f"ema.{i}": t for i, t in enumerate(ema.shadow_params)}

    def resume(self, path: Path) -> None:
        """Load a verified checkpoint; a :class:`ConfigError` naming the file when its contents do not fit."""
        self._check_deepspeed_checkpoint(path)
        try:
            self.accelerator.load_state(str(path), **self.load_kwargs)
        except Exception as err:
            # its files are intact (or predate manifests), so an error about its contents means it does
            # not fit this run; anything else (out of memory, a device error) is not about the checkpoint
            if not is_load_error(err):
                raise
            raise ConfigError(f"cannot resume from {self.loading or path}: {type(err).__name__}: "
                              f"{one_line(err)}") from err
        finally:
            self.loading = None


def is_load_error(err: Exception) -> bool:
    """Whether ``err``, raised by ``load_state``, says a checkpoint's contents do not fit: a missing file or
    key, a state of the wrong size (``load_state_dict``'s mismatches), a file torch or safetensors cannot read."""
    if isinstance(err, (KeyError, ValueError, FileNotFoundError, pickle.UnpicklingError, SafetensorError)):
        return True
    first = str(err).lstrip().split("\n", 1)[0]
    return (isinstance(err, RuntimeError) and not isinstance(err, torch.OutOfMemoryError)
            and first.startswith(("Error(s) in loading state_dict", "PytorchStreamReader")))


def one_line(err: Exception) -> str:
    """An error's message on one line: its first line, and the first item of a list it introduces
    (``load_state_dict`` lists every mismatched tensor) with how many more there are."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else err
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}" + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
    return lines[0] if lines else type(err).__name__
