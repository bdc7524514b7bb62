"""LoRA on the denoiser through peft, the reference policy (adapter disabled) and adapter export.

A denoiser with diffusers' ``PeftAdapterMixin`` (SD3, FLUX, Wan) is adapted through its own
``add_adapter`` / ``set_adapter`` / ``disable_adapters``; one without it (Stable Audio's DiT) through
peft directly (``inject_adapter_in_model`` and the tuner layers' own switches), with the same result:
``peft_config`` on the module, adapters named, the reference policy = the adapter disabled.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.utils.peft_utils import recurse_remove_peft_layers, set_adapter_layers
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

#: File names of a LoRA exported in peft's own format (a denoiser without a diffusers LoRA loader); the
#: weights file has the name of diffusers' LoRA export, so a run's ``final/lora`` looks the same.
PEFT_LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
PEFT_LORA_CONFIG = "adapter_config.json"


def lora_config(rank: int, alpha: int, target_modules: list[str], init: str = "gaussian") -> LoraConfig:
    """A peft LoRA config; peft initialises B to zero, so the adapted model starts equal to the base."""
    init_weights: bool | str = {"gaussian": "gaussian", "true": True}.get(init, init)
    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init_weights, target_modules=list(target_modules))


def add_lora(transformer: torch.nn.Module, config: LoraConfig) -> list[torch.nn.Parameter]:
    """Freeze the transformer, inject a LoRA adapter and return its trainable parameters."""
    transformer.requires_grad_(False)
    add_adapter(transformer, config)
    params = [p for p in transformer.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"LoRA target modules {config.target_modules} matched nothing in "
                         f"{type(transformer).__name__}; set lora.target_modules")
    return params


def has_mixin(module: torch.nn.Module) -> bool:
    """Whether ``module`` carries diffusers' own adapter methods (``PeftAdapterMixin``)."""
    return isinstance(module, PeftAdapterMixin)


def add_adapter(transformer: torch.nn.Module, config: LoraConfig, adapter_name: str = "default") -> None:
    """Inject adapter ``adapter_name``: through diffusers' ``add_adapter`` where the module has it, else peft's
    ``inject_adapter_in_model`` (which records ``peft_config`` on the module). The new adapter is active."""
    if has_mixin(transformer):
        transformer.add_adapter(config, adapter_name=adapter_name)
        return
    if adapter_name in getattr(transformer, "peft_config", {}):
        raise ValueError(f"adapter {adapter_name!r} already exists")
    config.base_model_name_or_path = None
    inject_adapter_in_model(config, transformer, adapter_name)
    transformer._hf_peft_config_loaded = True  # what has_lora reads, as diffusers' mixin sets it
    set_active_adapter(transformer, adapter_name)


def set_active_adapter(transformer: torch.nn.Module, name: str) -> None:
    """Make adapter ``name`` the only active one (peft also makes it the only trainable one)."""
    if has_mixin(transformer):
        transformer.set_adapter(name)
        return
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(name)


def set_adapters_enabled(transformer: torch.nn.Module, enabled: bool) -> None:
    """Switch every adapter layer on or off (off: the base model, the reference policy)."""
    if has_mixin(transformer):
        transformer.enable_adapters() if enabled else transformer.disable_adapters()
    else:
        set_adapter_layers(transformer, enabled=enabled)


def has_lora(transformer: torch.nn.Module) -> bool:
    """Whether a peft adapter was injected into ``transformer``."""
    return bool(getattr(transformer, "_hf_peft_config_loaded", False))


class ReferencePolicy:
    """The frozen reference for KL: the same module with its LoRA disabled, or a frozen copy when
    training fully (made only when needed, since it doubles the denoiser's memory)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self.copy = None if has_lora(transformer) else copy.deepcopy(transformer).requires_grad_(False).eval()

    @contextlib.contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        """Yield the module computing the reference velocity."""
        if self.copy is not None:
            yield self.copy
            return
        set_adapters_enabled(self.transformer, False)
        try:
            yield self.transformer
        finally:
            set_adapters_enabled(self.transformer, True)


def lora_state_dict(transformer: torch.nn.Module, adapter_name: str = "default",
                    full_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """An adapter's weights in peft's naming; taken from ``full_state`` (the module's state dict gathered from
    its shards, :func:`genrl.trainer.sharding.full_lora_state_dict`) when given, else from the module."""
    return get_peft_model_state_dict(transformer, state_dict=full_state, adapter_name=adapter_name)


def load_lora_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor],
                         adapter_name: str = "default") -> None:
    """Load weights saved by :func:`lora_state_dict`; raise if any adapter weight is missing."""
    result = set_peft_model_state_dict(transformer, state, adapter_name=adapter_name)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k and f".{adapter_name}." in k]
    if missing:
        raise KeyError(f"checkpoint lacks LoRA weights, e.g. {missing[:3]}")


def export_lora(pipe, transformer: torch.nn.Module, directory: str | Path,
                full_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter in the diffusers LoRA format (``pipe.load_lora_weights(directory)`` reads it);
    ``full_state`` as in :func:`lora_state_dict`."""
    directory = Path(directory)
    config = transformer.peft_config["default"]
    pipe.__class__.save_lora_weights(directory, transformer_lora_layers=lora_state_dict(transformer, full_state=full_state),
                                     transformer_lora_adapter_metadata=config.to_dict())
    return directory


def _adapter_params(transformer: torch.nn.Module, name: str) -> dict[str, torch.nn.Parameter]:
    """LoRA parameters of adapter ``name`` keyed by their name with the adapter part removed."""
    marker = f".{name}."
    return {n.replace(marker, "."): p for n, p in transformer.named_parameters() if "lora_" in n and marker in n}


def add_second_adapter(transformer: torch.nn.Module, name: str) -> None:
    """Add adapter ``name`` with the default adapter's config and weights; it is frozen and inactive."""
    with warnings.catch_warnings():  # peft warns that a second adapter is being added, which is the point
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        add_adapter(transformer, copy.deepcopy(transformer.peft_config["default"]), adapter_name=name)
    set_active_adapter(transformer, "default")  # peft makes the newest adapter active and trainable; undo that
    update_adapter_ema(transformer, name, source="default", decay=0.0)


@torch.no_grad()
def update_adapter_ema(transformer: torch.nn.Module, target: str, source: str = "default", decay: float = 0.0) -> None:
    """``target <- decay * target + (1 - decay) * source`` over every LoRA weight of the two adapters."""
    src, dst = _adapter_params(transformer, source), _adapter_params(transformer, target)
    if src.keys() != dst.keys() or not src:
        raise KeyError(f"adapters {source!r} and {target!r} do not have the same LoRA weights")
    for key, p in dst.items():
        p.mul_(decay).add_(src[key].detach().to(p.dtype), alpha=1.0 - decay)


@contextlib.contextmanager
def adapter_active(transformer: torch.nn.Module, name: str) -> Iterator[torch.nn.Module]:
    """Make adapter ``name`` the active one for the duration (requires_grad flags are restored after)."""
    flags = {n: p.requires_grad for n, p in transformer.named_parameters()}
    set_active_adapter(transformer, name)
    try:
        yield transformer
    finally:
        set_active_adapter(transformer, "default")
        for n, p in transformer.named_parameters():
            p.requires_grad_(flags[n])


def export_peft_lora(transformer: torch.nn.Module, directory: str | Path,
                     full_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the default adapter in peft's naming with its ``LoraConfig`` (for a denoiser whose pipeline
    has no diffusers LoRA loader); :func:`load_peft_lora` reads it back. ``full_state`` as in
    :func:`lora_state_dict`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in lora_state_dict(transformer, full_state=full_state).items()}
    save_file(state, str(directory / PEFT_LORA_WEIGHTS))
    config = transformer.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])  # a set in peft; json needs a list
    (directory / PEFT_LORA_CONFIG).write_text(json.dumps(config, indent=2, default=str))
    return directory


def load_peft_lora(transformer: torch.nn.Module, directory: str | Path) -> None:
    """Inject and load an adapter written by :func:`export_peft_lora` as the module's default adapter."""
    directory = Path(directory)
    for name in (PEFT_LORA_WEIGHTS, PEFT_LORA_CONFIG):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"LoRA directory {str(directory)!r} has no {name}")
    config = LoraConfig.from_pretrained(str(directory))
    add_adapter(transformer, config)
    load_lora_state_dict(transformer, load_file(str(directory / PEFT_LORA_WEIGHTS)))


@torch.no_grad()
def merge_peft_lora(transformer: torch.nn.Module) -> torch.nn.Module:
    """Fuse the active adapter into the base weights and remove every adapter layer (in place)."""
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    recurse_remove_peft_layers(transformer)
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in transformer.__dict__:
            delattr(transformer, attr)
    return transformer
