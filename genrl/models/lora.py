"""LoRA on the denoiser through peft, the reference policy (adapter disabled) and adapter export."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict


def lora_config(rank: int, alpha: int, target_modules: list[str], init: str = "gaussian") -> LoraConfig:
    """A peft LoRA config; peft initialises B to zero, so the adapted model starts equal to the base."""
    init_weights: bool | str = {"gaussian": "gaussian", "true": True}.get(init, init)
    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init_weights, target_modules=list(target_modules))


def add_lora(transformer: torch.nn.Module, config: LoraConfig) -> list[torch.nn.Parameter]:
    """Freeze the transformer, inject a LoRA adapter and return its trainable parameters."""
    transformer.requires_grad_(False)
    transformer.add_adapter(config)
    params = [p for p in transformer.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"LoRA target modules {config.target_modules} matched nothing in "
                         f"{type(transformer).__name__}; set lora.target_modules")
    return params


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
        self.transformer.disable_adapters()
        try:
            yield self.transformer
        finally:
            self.transformer.enable_adapters()


def lora_state_dict(transformer: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """An adapter's weights in peft's naming."""
    return get_peft_model_state_dict(transformer, adapter_name=adapter_name)


def load_lora_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor],
                         adapter_name: str = "default") -> None:
    """Load weights saved by :func:`lora_state_dict`; raise if any adapter weight is missing."""
    result = set_peft_model_state_dict(transformer, state, adapter_name=adapter_name)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k and f".{adapter_name}." in k]
    if missing:
        raise KeyError(f"checkpoint lacks LoRA weights, e.g. {missing[:3]}")


def export_lora(pipe, transformer: torch.nn.Module, directory: str | Path) -> Path:
    """Write the adapter in the diffusers LoRA format (``pipe.load_lora_weights(directory)`` reads it)."""
    directory = Path(directory)
    config = transformer.peft_config["default"]
    pipe.__class__.save_lora_weights(directory, transformer_lora_layers=lora_state_dict(transformer),
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
        transformer.add_adapter(transformer.peft_config["default"], adapter_name=name)
    transformer.set_adapter("default")  # peft makes the newest adapter active and trainable; undo that
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
    transformer.set_adapter(name)
    try:
        yield transformer
    finally:
        transformer.set_adapter("default")
        for n, p in transformer.named_parameters():
            p.requires_grad_(flags[n])
