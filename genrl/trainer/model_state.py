"""The model service: the pipeline, its adapter, the trainable denoiser under accelerate, its optimizer,
EMA and reference policy, and the export of what was trained."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from genrl.algorithms import Algorithm
from genrl.config import ConfigError, ExperimentConfig
from genrl.models import AUTO_FAMILY, adapter_class, place_module
from genrl.models.attention import set_attention
from genrl.models.from_config import adapter_from_config, config_check
from genrl.models.loading import load_pipeline
from genrl.models.lora import ReferencePolicy, add_lora, add_second_adapter, lora_config
from genrl.models.offload import FrozenOffload, check_offload_names
from genrl.utils.files import replace_dir_atomically
from genrl.utils.quiet import quiet_hub_libraries

from .deepspeed_zero import configure_deepspeed, load_checkpoints_weights_only, zero_stage
from .sharding import broadcast_initial_weights, full_lora_state_dict, full_state_dict, shard_denoiser

logger = logging.getLogger(__name__)


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype frozen modules run in under ``mixed_precision`` (trainable weights stay fp32)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


class ModelState:
    """Loads ``cfg.model`` and prepares what trains: LoRA (or every weight) with the algorithm's extra adapters,
    AdamW, a constant schedule, the EMA and, when the algorithm needs it, the frozen reference policy.

    Attributes: ``pipe``, ``adapter``, ``model`` (the denoiser under accelerate's wrappers), ``unwrapped`` (the
    bare denoiser, which rollouts call), ``params`` (the trainable parameters), ``optimizer``,
    ``lr_scheduler``, ``ema`` (None without ``train.ema``), ``reference`` (None unless needed) and ``sharded``.

    With ``sharded`` the denoiser is split per transformer block over the processes (FSDP2,
    :func:`genrl.trainer.sharding.shard_denoiser`) instead of being replicated by accelerate's DDP: its
    parameters become sharded tensors, it is kept in fp32 and gathered in the mixed-precision dtype for
    the forward, and neither it nor its optimizer goes through ``accelerator.prepare`` (whose checkpoints
    would pickle sharded tensors); the checkpoint service saves them as torch distributed checkpoints.
    """

    def __init__(self, cfg: ExperimentConfig, accelerator: Accelerator, algorithm: Algorithm,
                 sharded: bool = False) -> None:
        self.cfg, self.accelerator, self.sharded = cfg, accelerator, sharded
        m, acc, dtype = cfg.model, accelerator, weight_dtype(cfg.mixed_precision)
        stored = torch.float32 if sharded else dtype  # FSDP2 keeps one storage dtype per unit
        if m.family != AUTO_FAMILY:  # an unknown family fails before a long download
            config_check(lambda: adapter_class(m.family), "model.family")
        self.pipe = self._load_base()
        self.pipe.set_progress_bar_config(disable=True)
        for lever in ("slicing", "tiling"):
            if getattr(m, f"vae_{lever}"):
                config_check(lambda lever=lever: enable_vae_lever(self.pipe, lever), f"model.vae_{lever}")
        self.adapter = adapter_from_config(cfg, self.pipe)
        self.adapter.place_frozen(acc.device, dtype)
        self.offload = None  # the frozen components in host memory between uses (model.cpu_offload)
        if m.cpu_offload:
            self.offload = config_check(lambda: self._offload_frozen(m.cpu_offload), "model.cpu_offload")
        transformer = self.adapter.transformer
        if cfg.lora.enabled:
            place_module(transformer, acc.device, stored)
            targets = cfg.lora.target_modules or list(self.adapter.default_lora_targets)
            params = add_lora(transformer, lora_config(cfg.lora.rank, cfg.lora.alpha, targets, cfg.lora.init))
            for p in params:  # trainable weights stay in fp32 under mixed precision
                p.data = p.data.float()
            for name in algorithm.extra_lora_adapters:  # e.g. DiffusionNFT's old policy, before any sharding
                add_second_adapter(transformer, name)
        else:
            transformer.to(acc.device)
            params = [p for p in transformer.parameters() if p.requires_grad]
        if m.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        config_check(lambda: set_attention(transformer, m.attention), "model.attention")
        # a full fine-tune's reference is a frozen copy, taken before sharding (LoRA's is the disabled adapter)
        self.reference = ReferencePolicy(transformer) if algorithm.needs_reference() else None
        if sharded:
            broadcast_initial_weights(transformer)
            shard_denoiser(transformer, self.adapter.blocks, compute_dtype=dtype)
            params = [p for p in transformer.parameters() if p.requires_grad]  # now sharded tensors
        t = cfg.train
        optimizer = torch.optim.AdamW(params, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
                                      weight_decay=t.adam_weight_decay, eps=t.adam_epsilon)
        scheduler = get_scheduler("constant", optimizer)
        self.zero_stage = zero_stage(acc)  # None unless the launch is DeepSpeed's
        if sharded:
            self.model, self.optimizer, self.lr_scheduler = transformer, optimizer, scheduler
        else:
            if self.zero_stage is not None:
                configure_deepspeed(acc, cfg, micro_batch=cfg.sample.batch_size)
            self.model, self.optimizer, self.lr_scheduler = acc.prepare(transformer, optimizer, scheduler)
        # the bare transformer under accelerate's wrappers, unwrapped once: unwrap_model walks the module
        # tree, and the rollouts call the model on every step
        self.unwrapped: torch.nn.Module = acc.unwrap_model(self.model)
        if self.zero_stage is not None:
            load_checkpoints_weights_only(self.model)
        self.params = params
        # the decay diffusers computes from optimization_step is (1 + s) / (10 + s), capped at ema_decay, only
        # with these three settings (their defaults, spelled out because ema_step relies on them)
        self.ema = (EMAModel(params, decay=t.ema_decay, min_decay=0.0, update_after_step=0, use_ema_warmup=False)
                    if t.ema else None)
        if t.ema_on_cpu and sharded:
            raise ConfigError("train.ema_on_cpu: a sharded denoiser's EMA is sharded with it (1/N of the weights per "
                              "process) and stays on the device; leave it false under model.sharding=fsdp")
        #: where the EMA weights live: the host with train.ema_on_cpu (on the device only for their update)
        self.ema_device = torch.device("cpu") if t.ema_on_cpu else acc.device
        if self.ema is not None:
            self.ema.to(self.ema_device)

    def _offload_frozen(self, names: list[str]) -> FrozenOffload:
        check_offload_names(names, self.adapter.frozen_components)
        offload = FrozenOffload(self.pipe, names, self.accelerator.device)
        offload.wrap_adapter(self.adapter)
        return offload

    def _load_base(self):
        m = self.cfg.model
        return load_pipeline(m.pretrained, trust_remote_code=m.trust_remote_code,
                             **({"revision": m.revision} if m.revision else {}))

    def after_optimizer_step(self, global_step: int) -> None:
        """The EMA's update after optimizer step ``global_step`` (on its schedule; nothing without EMA)."""
        if self.ema is None:
            return
        on_host = self.ema_device != self.accelerator.device
        if on_host and (global_step + 1) % self.cfg.train.ema_update_every == 0:
            # diffusers' offload_ema: the shadow weights visit the device for their update, then go back (a
            # blocking copy: a checkpoint may read them right after)
            self.ema.to(self.accelerator.device)
        if ema_step(self.ema, self.params, global_step, self.cfg.train.ema_update_every) and on_host:
            self.ema.to(self.ema_device)

    @contextlib.contextmanager
    def ema_weights(self):
        """Swap the EMA weights into the trainable parameters for the duration (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    def full_state(self) -> dict[str, torch.Tensor] | None:
        """The sharded denoiser's state dict gathered whole (LoRA weights only with LoRA) on the main process
        (every process calls it; the others get an empty dict); None when the denoiser is not sharded."""
        if not self.sharded:
            return None
        return full_lora_state_dict(self.unwrapped) if self.cfg.lora.enabled else full_state_dict(self.unwrapped)

    def export(self, final: Path) -> None:
        """Write ``final/lora`` (diffusers LoRA format, EMA weights if enabled) and ``final/pipeline``: the
        merged pipeline when ``log.export_merged``, the fully fine-tuned one without LoRA. Every process calls
        it (a sharded denoiser is gathered first); the main process writes."""
        lora, main = self.cfg.lora.enabled, self.accelerator.is_main_process
        with self.ema_weights():
            gathered = self.full_state()
            if main and lora:
                replace_dir_atomically(final / "lora", lambda d: self.adapter.export_lora(d, self.unwrapped,
                                                                                           full_state=gathered))
            elif main and gathered is not None:  # a sharded full fine-tune: its weights into a copy of the base
                def save_full(d):
                    base = self._load_base()
                    getattr(base, self.adapter.denoiser_name).load_state_dict(gathered)
                    base.save_pretrained(d)
                replace_dir_atomically(final / "pipeline", save_full)
            elif main:
                replace_dir_atomically(final / "pipeline", self.pipe.save_pretrained)
        if not main:
            return
        if lora and self.cfg.log.export_merged:
            with quiet_hub_libraries():  # a fresh copy of the base with the exported adapter fused in: the users' path
                replace_dir_atomically(final / "pipeline", lambda d: self.adapter.merge_lora(
                    self._load_base(), final / "lora").save_pretrained(d))


def enable_vae_lever(pipe, lever: str) -> None:
    """``pipe.vae.enable_slicing()`` or ``enable_tiling()``; a ``ValueError`` when the pipeline's VAE has neither."""
    vae = getattr(pipe, "vae", None)
    enable = getattr(vae, f"enable_{lever}", None)
    if enable is None:
        raise ValueError(f"the pipeline's VAE ({type(vae).__name__}) has no {lever}")
    enable()


def ema_step(ema: EMAModel, params: list[torch.nn.Parameter], optimizer_step: int, every: int) -> bool:
    """The reference's EMA schedule (flow_grpo's ``EMAModuleWrapper``): after optimizer step ``s``, when
    ``(s + 1) % every == 0``, ``ema += (1 - d) (param - ema)`` with ``d = min((1 + s) / (10 + s), decay)``.

    Returns whether it updated. diffusers' EMAModel would count its own updates as ``s`` (so the first
    update copies the weights, and the decay reaches 0.9 after 80 updates, not 80 optimizer steps);
    it is handed the optimizer step instead, which also makes a resumed EMA continue exactly. The
    reference calls its EMA once per sampling batch, so with gradient accumulation over k batches it
    applies a step's update k times; here it is applied once per optimizer step.
    """
    if (optimizer_step + 1) % every:
        return False
    # EMAModel.step adds 1 to optimization_step and get_decay subtracts it again: the decay uses s
    ema.optimization_step = optimizer_step
    ema.step(params)
    return True
