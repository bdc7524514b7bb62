"""FSDP2 sharding of the denoiser (``torch.distributed.fsdp.fully_shard``), one unit per transformer block.

accelerate switches to FSDP only on GPU-like distributed types (on a CPU it falls back to DDP silently), so these
functions call torch's FSDP2 directly; they are what the CPU tests check with 2 gloo processes. Each block the
model family declares (:attr:`genrl.models.base.ModelAdapter.blocks`) is sharded on its own, then the root, so a
forward gathers one block's parameters at a time. LoRA's trainable parameters and the frozen base weights shard
alike; the full LoRA state dict is gathered for export, and checkpoints are torch distributed checkpoints (one
shard per rank), which load at another world size too.
"""

from __future__ import annotations

import os
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
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

#: the ``model.sharding`` values
SHARDING_MODES = ("none", "fsdp")


def shard_denoiser(transformer: torch.nn.Module, block_names: Iterable[str], mesh=None,
                   compute_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Shard every module whose class is named in ``block_names``, then the whole denoiser (in place).

    FSDP2 needs one storage dtype per unit, so the denoiser is kept in fp32 and, with ``compute_dtype``
    (mixed precision), gathered in that dtype for the forward, gradients reduced in fp32."""
    names = set(block_names)
    blocks = [m for m in transformer.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} has no module of the block classes {sorted(names)}")
    policy = (MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
              if compute_dtype not in (None, torch.float32) else MixedPrecisionPolicy())
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(transformer, mesh=mesh, mp_policy=policy)
    return transformer


@torch.no_grad()
def broadcast_initial_weights(module: torch.nn.Module) -> None:
    """Give every process the main process's trainable and LoRA weights, as DDP does when it wraps a module: each
    process initialised its LoRA from its own seed, and sharding would otherwise stitch one tensor together from
    several initialisations. The frozen base weights are the same file on every process and are not sent."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for name, p in module.named_parameters():
        if p.requires_grad or "lora_" in name:
            dist.broadcast(p.data, src=0)


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether ``module`` was sharded by :func:`shard_denoiser`."""
    return isinstance(module, FSDPModule)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole (a collective: every rank calls it), any other tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_lora_state_dict(transformer: torch.nn.Module, every_rank: bool = False) -> dict[str, torch.Tensor]:
    """The LoRA weights gathered to full CPU tensors, in the module's own parameter names: on rank 0 only (what an
    export needs; the other ranks get an empty dict), or on ``every_rank``."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=not every_rank)
    state = get_model_state_dict(transformer, options=options)
    return {k: v.detach().cpu() for k, v in state.items() if "lora_" in k}


def full_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight gathered to full CPU tensors on rank 0 (the others get an empty dict): a full fine-tune's export."""
    state = get_model_state_dict(transformer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach() for k, v in state.items()}


def save_sharded(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write the model's and the optimizer's shards with torch distributed checkpoint (every rank calls it), and
    ``extra`` sharded tensors (an EMA's shadow weights) under their names."""
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state, "extra": dict(extra or {})},
             checkpoint_id=str(directory))


def load_sharded(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 extra: dict[str, torch.Tensor] | None = None) -> None:
    """Load a checkpoint written by :func:`save_sharded` into a model sharded the same way (any world size);
    ``extra`` tensors, named as they were saved, are filled in place."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state, **({"extra": extra} if extra else {})}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def resolve_sharding(setting: str, environ: dict | None = None) -> tuple[str, str | None]:
    """The sharding a run uses (``"fsdp"`` or ``"none"``) for ``model.sharding`` and the launch, and a note to log.

    ``auto`` follows the launch: an accelerate config with ``distributed_type: FSDP`` (``ACCELERATE_USE_FSDP``
    in the environment) means FSDP2. genrl then shards the denoiser itself, per block of the model family,
    on the processes accelerate started (NCCL on GPUs, gloo on CPUs), and switches accelerate's own FSDP
    wrapping off for this process (it knows neither LoRA's reference policy nor genrl's checkpoints, and on a
    CPU it would silently run DDP instead).
    """
    environ = os.environ if environ is None else environ
    asked = environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")
    if asked:
        environ.pop("ACCELERATE_USE_FSDP")
    if setting == "none":
        return "none", ("the accelerate config asks for FSDP but model.sharding=none: the denoiser is replicated "
                        "on every process (DDP)") if asked else None
    if setting == "fsdp" or asked:
        version = environ.get("FSDP_VERSION", "2")
        how = ("the accelerate config asks for FSDP" + (f" (fsdp_version {version}; genrl uses version 2)"
                                                        if version != "2" else "")) if asked else "model.sharding=fsdp"
        return "fsdp", (f"{how}: genrl shards the denoiser with FSDP2 (torch fully_shard, one unit per transformer "
                        "block) on the processes accelerate launched")
    return "none", None
