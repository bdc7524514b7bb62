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
from .model_state import ModelState
from .sharding import load_sharded, save_sharded

logger = logging.getLogger(__name__)

SHARDED_DIR = "sharded"  # a sharded denoiser's and optimizer's torch distributed checkpoint, in a genrl checkpoint


class TrainState:
    """Epochs completed, optimizer steps taken, images generated and training time; checkpointed with the rest."""

    def __init__(self) -> None:
        self.epoch = 0
        self.global_step = 0
        self.samples = 0  # training images generated, all processes
        self.train_seconds = 0.0  # wall time of sampling, rewards and updates (evaluation excluded)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step, "samples": self.samples,
                "train_seconds": self.train_seconds}

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
        model = acc.unwrap_model(models[0])
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
            self.models.ema.to(self.accelerator.device)
        if self.models.sharded:
            path = self.loading = os.path.join(input_dir, SHARDED_DIR)
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{input_dir} was written without model.sharding=fsdp ({SHARDED_DIR}/ "
                                        "missing); resume it with the sharding it was written with")
            load_sharded(path, self.models.model, self.models.optimizer, extra=self._sharded_ema())
        elif os.path.isdir(os.path.join(input_dir, SHARDED_DIR)):
            raise FileNotFoundError(f"{input_dir} holds a sharded denoiser (model.sharding=fsdp); resume it sharded")
        elif self.models.cfg.lora.enabled:
            model = self.accelerator.unwrap_model(models.pop())
            for adapter in model.peft_config:
                path = self.loading = os.path.join(input_dir, self.lora_file(adapter))
                load_lora_state_dict(model, load_file(path, device=str(self.accelerator.device)), adapter)
        self.loading = None  # accelerate loads the optimizer, scheduler and RNG states next

    def _sharded_ema(self) -> dict[str, torch.Tensor]:
        """The EMA's shadow weights by position, for the sharded checkpoint (loaded in place)."""
        ema = self.models.ema
        return {} if ema is None else {f"ema.{i}": t for i, t in enumerate(ema.shadow_params)}

    def resume(self, path: Path) -> None:
        """Load a verified checkpoint; a :class:`ConfigError` naming the file when its contents do not fit."""
        try:
            self.accelerator.load_state(str(path))
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
