"""FSDP2 sharding of the denoiser (``torch.distributed.fsdp.fully_shard``), one unit per transformer block.

accelerate switches to FSDP only on GPU-like distributed types (on a CPU it falls back to DDP silently), so these
functions call torch's FSDP2 directly; they are what the CPU tests check with 2 gloo processes. Each block the
model family declares (:attr:`genrl.models.base.ModelAdapter.blocks`) is sharded on its own, then the root, so a
forward gathers one block's parameters at a time. LoRA's trainable parameters and the frozen base weights shard
alike; the full LoRA state dict is gathered for export, and checkpoints are torch distributed checkpoints (one
shard per rank), which load at another world size too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import fully_shard


def shard_denoiser(transformer: torch.nn.Module, block_names: Iterable[str], mesh=None) -> torch.nn.Module:
    """Shard every module whose class is named in ``block_names``, then the whole denoiser (in place)."""
    names = set(block_names)
    blocks = [m for m in transformer.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} has no module of the block classes {sorted(names)}")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(transformer, mesh=mesh)
    return transformer


def full_lora_state_dict(transformer: torch.nn.Module, every_rank: bool = False) -> dict[str, torch.Tensor]:
    """The LoRA weights gathered to full CPU tensors, in the module's own parameter names: on rank 0 only (what an
    export needs; the other ranks get an empty dict), or on ``every_rank``."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=not every_rank)
    state = get_model_state_dict(transformer, options=options)
    return {k: v.detach().cpu() for k, v in state.items() if "lora_" in k}


def save_sharded(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write the model's and the optimizer's shards with torch distributed checkpoint (every rank calls it)."""
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(directory))


def load_sharded(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a checkpoint written by :func:`save_sharded` into a model sharded the same way (any world size)."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
