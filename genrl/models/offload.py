"""CPU offload of frozen pipeline components: kept in host memory, on the device only while they run.

The text encoders of the large families (SD3's T5-XXL: 9 GB in bf16, Wan's UMT5-XXL: 11 GB) run once per sampling
batch (once per prompt with ``sample.cache_prompt_embeddings``) and then sit idle through the whole rollout and
update; the VAE runs once per batch to decode. ``model.cpu_offload`` names the components to keep on the CPU: each
is moved to the device when its forward (or, through diffusers' ``apply_forward_hook``, its ``encode`` /
``decode``) starts, every other offloaded component is moved off first, and all of them go back to the host when
the adapter call that used them returns. So at most one of them is on the device at a time, and none during the
denoiser's sampling and training: diffusers' ``enable_model_cpu_offload`` does the same within one pipeline
call, which genrl's rollouts do not go through.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

#: the adapter calls that run frozen components (text towers, VAE encoder, decoder); the offloaded ones are
#: released when such a call returns
OFFLOADING_CALLS = ("encode", "encode_images", "decode")


class _OnDeviceWhileRunning(ModelHook):
    """Before the module runs: every other offloaded component to the host, this one to the device."""

    def __init__(self, offload: FrozenOffload, name: str) -> None:
        super().__init__()
        self.offload, self.name = offload, name

    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        self.offload.bring(self.name)
        return args, kwargs


class FrozenOffload:
    """Keeps the named frozen components of ``pipe`` on ``host`` and moves each to ``device`` only while it runs.

    ``resident`` is the component on the device (None between adapter calls). :meth:`wrap_adapter` makes the
    adapter's calls that run frozen components release them when they return.
    """

    def __init__(self, pipe: Any, names: Sequence[str], device: torch.device | str,
                 host: torch.device | str = "cpu") -> None:
        self.device, self.host = torch.device(device), torch.device(host)
        self.modules: dict[str, torch.nn.Module] = {}
        for name in names:
            module = getattr(pipe, name, None)
            if module is None:  # e.g. a pipeline saved without its T5
                raise ValueError(f"the pipeline has no {name!r} to offload")
            module.to(self.host)
            add_hook_to_module(module, _OnDeviceWhileRunning(self, name))
            self.modules[name] = module
        self.resident: str | None = None

    def bring(self, name: str) -> None:
        """Put component ``name`` on the device, after moving the one there (if another) back to the host."""
        if self.resident == name:
            return
        self.release()
        self.modules[name].to(self.device)
        self.resident = name

    def release(self) -> None:
        """Move the component on the device (if any) back to the host."""
        if self.resident is not None:
            self.modules[self.resident].to(self.host)
            self.resident = None

    def released_after(self, call: Callable) -> Callable:
        """``call``, releasing the offloaded components when it returns (or raises)."""
        @functools.wraps(call)
        def run(*args, **kwargs):
            try:
                return call(*args, **kwargs)
            finally:
                self.release()
        return run

    def wrap_adapter(self, adapter: Any) -> None:
        """Make ``adapter``'s calls that run frozen components (:data:`OFFLOADING_CALLS`) release them afterwards."""
        for name in OFFLOADING_CALLS:
            call = getattr(adapter, name, None)
            if call is not None:
                setattr(adapter, name, self.released_after(call))

    def remove(self) -> None:
        """Take the hooks off (the components stay on the host)."""
        self.release()
        for module in self.modules.values():
            remove_hook_from_module(module)


def check_offload_names(names: Sequence[str], frozen: Sequence[str]) -> None:
    """A ``ValueError`` naming an entry of ``model.cpu_offload`` that is not a frozen component of the family."""
    unknown = [n for n in names if n not in frozen]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a frozen component of this model family (choose from "
                         f"{', '.join(frozen)})")
