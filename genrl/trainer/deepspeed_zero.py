"""DeepSpeed ZeRO-2 through accelerate: what a DeepSpeed launch needs from genrl before and after the Accelerator.

ZeRO-2 partitions the gradients and the optimizer state of the trainable weights over the processes and keeps the
weights themselves whole on each, so rollouts, the EMA and LoRA's reference policy (the disabled adapter) work as
under DDP; it saves the memory of AdamW's two fp32 moments and of the gradients, which dominates a full fine-tune.
ZeRO-3 (weights partitioned too) is refused: rollouts call the denoiser outside the engine's forward, where
ZeRO-3's weights are empty placeholders; genrl's FSDP2 (``model.sharding=fsdp``) is the way to shard the weights.

Two things accelerate leaves to the script: the engine's batch sizes and clipping must be filled in before
``prepare`` (genrl calls its backward once per (batch, step) unit, so the micro batch is informational), and on
a machine without a GPU accelerate starts DeepSpeed with no process-group backend and then counts one process;
naming gloo (DeepSpeed's CPU accelerator uses it) makes it count them all, which is what lets the CPU test
compare a ZeRO-2 run with a DDP run.
"""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from genrl.config import ConfigError, ExperimentConfig
from rewards.optional import require

SUPPORTED_STAGES = (0, 1, 2)


def deepspeed_launch(environ: dict | None = None) -> bool:
    """Whether ``accelerate launch`` was given a DeepSpeed config (``distributed_type: DEEPSPEED``); a
    :class:`~rewards.optional.MissingExtraError` naming the extra when DeepSpeed is not installed."""
    environ = os.environ if environ is None else environ
    asked = environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true", "yes")
    if asked:
        require("deepspeed")
    return asked


def accelerator_kwargs(deepspeed: bool) -> dict:
    """The Accelerator's device and process-group arguments for this launch.

    Without a GPU, DDP runs as accelerate's CPU mode (``cpu=True``, gloo); DeepSpeed must not be in CPU mode
    (accelerate then drops it for DDP) and gets gloo named instead.
    """
    on_cpu = not torch.cuda.is_available()
    if deepspeed:
        return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]} if on_cpu else {}
    return {"cpu": on_cpu}  # lets `accelerate launch --multi_gpu` run gloo processes on a CPU


def check_deepspeed_run(cfg: ExperimentConfig, sharding: str, many_forwards_per_backward: bool,
                        accumulation: int, environ: dict | None = None) -> None:
    """Refuse what a DeepSpeed launch cannot run, naming the config key (before any model loads), and take the
    gradient accumulation from genrl's config: ``accelerate launch`` exports the DeepSpeed config's value, which
    would override the Accelerator's (``accumulation``: backward passes per optimizer step)."""
    environ = os.environ if environ is None else environ
    launched = environ.pop("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1")
    if launched not in ("1", "auto", str(accumulation)):
        raise ConfigError(f"deepspeed_config.gradient_accumulation_steps={launched}: genrl sets it from "
                          "train.gradient_accumulation_steps and the algorithm's units per batch "
                          f"({accumulation} here); leave it at 1")
    if sharding == "fsdp":
        raise ConfigError("model.sharding=fsdp: the launch's accelerate config asks for DeepSpeed; use one of "
                          "them (configs/accelerate/fsdp2.yaml or configs/accelerate/deepspeed_zero2.yaml)")
    if many_forwards_per_backward:
        raise ConfigError(f"train.algorithm={cfg.train.algorithm} calls the denoiser many times per backward "
                          "(recomputed inside it), which DeepSpeed's gradient hooks cannot follow; launch it with "
                          "configs/accelerate/ddp.yaml or fsdp2.yaml")


def configure_deepspeed(accelerator: Accelerator, cfg: ExperimentConfig, micro_batch: int) -> None:
    """Fill the engine's batch sizes and gradient clipping from the run's config, and refuse ZeRO-3 and weight
    offload (a :class:`ConfigError` naming the accelerate config's key). Call before ``accelerator.prepare``."""
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    zero = ds.get("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    if stage not in SUPPORTED_STAGES:
        raise ConfigError(f"deepspeed_config.zero_stage={stage}: genrl runs ZeRO stages 0-2 (ZeRO-3 partitions the "
                          "weights, which rollouts read outside the engine); for sharded weights use "
                          "configs/accelerate/fsdp2.yaml")
    if zero.get("offload_param", {}).get("device", "none") not in (None, "none"):
        raise ConfigError("deepspeed_config.offload_param_device: weight offload is a ZeRO-3 feature; genrl runs "
                          "ZeRO-2 (offload_optimizer_device: cpu offloads the optimizer state)")
    accumulation = accelerator.gradient_accumulation_steps  # genrl's (check_deepspeed_run kept the launch's out)
    ds["gradient_accumulation_steps"] = accumulation
    ds["train_micro_batch_size_per_gpu"] = micro_batch
    ds["train_batch_size"] = micro_batch * accumulation * accelerator.num_processes
    ds["gradient_clipping"] = cfg.train.max_grad_norm  # the engine clips; accelerate's clip_grad_norm_ reports it
    ds["steps_per_print"] = float("inf")  # genrl logs its own metrics


#: ``accelerator.save_state`` / ``load_state`` arguments of a DeepSpeed run: the engine's checkpoint keeps only the
#: trainable weights (a LoRA run's frozen base is not copied into every checkpoint), so loading it is not strict
SAVE_STATE_KWARGS = {"exclude_frozen_parameters": True}
LOAD_STATE_KWARGS = {"load_module_strict": False}
DEEPSPEED_LATEST_FILE = "latest"  # the engine's pointer to its checkpoint tag: marks a folder it wrote


def _deepspeed_record_classes() -> list[type]:
    """The plain record classes DeepSpeed pickles into its ZeRO optimizer files (a loss-scaler's settings, the ZeRO
    stage enum, a parameter's position in the flat partition): what its files need beyond tensors and builtins."""
    return [require("deepspeed.runtime.fp16.loss_scaler").LossScaler,
            require("deepspeed.runtime.zero.config").ZeroStageEnum,
            require("deepspeed.utils.tensor_fragment").fragment_address]


def load_checkpoints_weights_only(engine) -> None:
    """Make ``engine`` read its checkpoint files with ``torch.load(weights_only=True)`` (DeepSpeed's own engine
    unpickles them with ``weights_only=False``), allowing only DeepSpeed's record classes."""
    def load(path: str, map_location=None):
        with torch.serialization.safe_globals(_deepspeed_record_classes()):
            return torch.load(path, map_location=map_location, weights_only=True)

    engine.checkpoint_engine.load = load


def zero_stage(accelerator: Accelerator) -> int | None:
    """The ZeRO stage of a DeepSpeed run, None for any other."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return None
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))
