"""The model-adapter contract and its registry.

A model family is one file in ``genrl/models/`` holding a :class:`ModelAdapter` subclass, registered
with :func:`register_adapter` under a family name and the diffusers pipeline classes it serves (the
``_class_name`` of ``model_index.json``), so ``model.family: auto`` picks it from the pipeline itself.
The adapter owns everything family-specific: the media it produces, which pipeline components are
frozen and in which dtype, the default LoRA targets, prompt encoding with classifier-free guidance,
the noise schedule, initial noise drawn as the stock pipeline draws it, the model output converted to
a flow-matching velocity, the forward noising, decoding, and LoRA export. Samplers, algorithms and the
trainer see only this interface; ``tests/test_adapter_contract.py`` checks every registered family.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from rewards.media import LAYOUTS, Media

#: What a family's ``decode`` returns (``rewards.media.LAYOUTS``): images ``(N, 3, H, W)``, videos
#: ``(N, F, 3, H, W)``, both in [0, 1]; audio ``(N, channels, samples)`` in [-1, 1].
MEDIA_KINDS = tuple(LAYOUTS)

#: ``model.family`` value that selects the adapter from the loaded pipeline's class.
AUTO_FAMILY = "auto"


class ModelAdapter(ABC):
    """A diffusers pipeline as a velocity policy on latents (the flow-matching convention of the samplers).

    Subclasses set the class attributes and implement the abstract methods; keyword options of their
    ``__init__`` are the family's options (``model.options`` in a config), checked by name.
    """

    family: ClassVar[str] = ""  # set by register_adapter
    pipeline_classes: ClassVar[tuple[str, ...]] = ()  # set by register_adapter
    media_kind: ClassVar[str] = "image"
    #: peft ``target_modules`` used when ``lora.target_modules`` is not set
    default_lora_targets: ClassVar[tuple[str, ...]] = ()
    #: the pipeline attribute holding the trained network
    denoiser_name: ClassVar[str] = "transformer"
    #: pipeline components that are frozen and moved to the device (absent ones are skipped)
    frozen_components: ClassVar[tuple[str, ...]] = ()
    #: keys each prompt's condition must have (an editing family: ``("image",)``); empty: text only
    condition_keys: ClassVar[tuple[str, ...]] = ()
    #: frozen components kept in float32 whatever the mixed precision (the VAE decodes in fp32, as the
    #: reference implementations keep it)
    fp32_components: ClassVar[tuple[str, ...]] = ("vae",)
    #: class names of the denoiser's transformer blocks, the units FSDP shards; empty: the denoiser's own
    #: ``_no_split_modules`` (diffusers declares them for SD3, FLUX, Wan and Qwen-Image, not Stable Audio)
    block_class_names: ClassVar[tuple[str, ...]] = ()
    #: whether :meth:`encode` gives one fixed-length row per prompt, independent of the rest of the batch, so a
    #: prompt's conditioning can be cached across epochs (:mod:`genrl.models.embedding_cache`)
    prompt_embeddings_cacheable: ClassVar[bool] = False

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    # ------------------------------------------------------------------ components
    @property
    def transformer(self) -> torch.nn.Module:
        """The denoiser (the module LoRA is injected into)."""
        return getattr(self.pipe, self.denoiser_name)

    @property
    def blocks(self) -> tuple[str, ...]:
        """Class names of the denoiser's transformer blocks (:attr:`block_class_names`, else its ``_no_split_modules``)."""
        names = self.block_class_names or tuple(getattr(self.transformer, "_no_split_modules", None) or ())
        if not names:
            raise ValueError(f"model family {self.family!r} declares no transformer blocks to shard")
        return names

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def use_cfg(self) -> bool:
        """Whether a sampling call runs a classifier-free-guidance batch at the adapter's scale."""
        return float(getattr(self, "guidance_scale", 1.0)) > 1.0

    def place_frozen(self, device: torch.device | str, dtype: torch.dtype) -> None:
        """Freeze the non-trained components and move them to ``device`` in ``dtype`` (fp32 ones excepted)."""
        for name in self.frozen_components:
            module = getattr(self.pipe, name, None)
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
                target = torch.float32 if name in self.fp32_components else dtype
                place_module(module, device, target)

    # ------------------------------------------------------------------ the policy
    @abstractmethod
    def encode(self, prompts: Sequence[str], guidance_scale: float | None = None,
               conditions: Sequence[Mapping[str, Any]] | None = None) -> Any:
        """Condition a batch of prompts once per rollout; negative/unconditional embeddings are included
        when sampling at ``guidance_scale`` (None: the adapter's) runs a CFG batch. ``conditions`` holds one
        mapping per prompt with the :attr:`condition_keys` (a source image for editing); a text-only family
        refuses them (:meth:`check_no_conditions`). The result has ``select(index)`` returning the
        conditioning of a subset of the batch."""

    def check_no_conditions(self, conditions: Sequence[Mapping[str, Any]] | None) -> None:
        """Raise ``ValueError`` when a text-only family is given non-empty conditions."""
        if conditions is not None and any(conditions):
            raise ValueError(f"model family {self.family!r} is text-only and takes no conditions "
                             f"(got keys {sorted(set().union(*map(set, conditions)))})")

    @abstractmethod
    def schedule(self, num_steps: int) -> torch.Tensor:
        """Noise levels of a ``num_steps``-step sampler, float32, length ``num_steps + 1``, decreasing to 0:
        exactly the pipeline scheduler's sigmas, in flow-matching units (:meth:`flow_sigma`)."""

    @abstractmethod
    def initial_noise(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """One latent of pure noise per generator, drawn exactly as the stock pipeline's ``prepare_latents``."""

    @abstractmethod
    def velocity(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any, guidance_scale: float | None = None,
                 model: torch.nn.Module | None = None) -> torch.Tensor:
        """The guided flow-matching velocity ``v = eps - x0`` at noise level ``sigma`` (scalar or per sample),
        in one batched forward; ``model`` replaces the denoiser for this call (a wrapped or reference one).
        A family whose network predicts something else (epsilon, v in VP units) converts here."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` images in [0, 1] -> the latents :meth:`decode` maps back (a family that trains on data
        images, e.g. Ctrl-U's, implements it)."""
        raise NotImplementedError(f"model family {self.family!r} does not encode images to latents")

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Final latents -> media of :attr:`media_kind` (see :data:`MEDIA_KINDS`), differentiable."""

    def as_media(self, decoded: torch.Tensor) -> Media:
        """:meth:`decode`'s output as :class:`~rewards.media.Media` of this family's kind (a video or audio family
        adds its ``fps`` / ``sample_rate``)."""
        return Media(decoded, self.media_kind)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Forward noising to level ``sigma``: ``(1 - sigma) x0 + sigma noise``, what diffusers' flow-matching
        schedulers' ``scale_noise`` computes (a family on another path overrides it)."""
        s = torch.as_tensor(sigma, dtype=torch.float32, device=x0.device)
        s = s.reshape(-1, *([1] * (x0.ndim - 1))) if s.ndim else s
        return ((1 - s) * x0.float() + s * noise.float()).to(x0.dtype)

    # ------------------------------------------------------------------ coordinates
    def flow_sigma(self, scheduler_sigma: torch.Tensor | float) -> torch.Tensor:
        """A noise level of the pipeline's scheduler in the samplers' flow-matching units (identity for a
        flow-matching scheduler; a VE / EDM family maps ``sigma -> sigma / (1 + sigma)``)."""
        return torch.as_tensor(scheduler_sigma, dtype=torch.float32)

    def flow_latents(self, scheduler_latents: torch.Tensor, scheduler_sigma: torch.Tensor | float) -> torch.Tensor:
        """A latent in the scheduler's own units at its noise level, in the samplers' coordinates (identity
        for a flow-matching scheduler)."""
        return scheduler_latents

    # ------------------------------------------------------------------ LoRA export
    @staticmethod
    def has_lora_loader(pipe: Any) -> bool:
        """Whether the pipeline class reads diffusers-format LoRA (``load_lora_weights``); without one,
        LoRA is exported and loaded in peft's format on the denoiser (:mod:`genrl.models.lora`)."""
        return hasattr(pipe, "load_lora_weights")

    def export_lora(self, directory: str | Path, transformer: torch.nn.Module | None = None,
                    full_state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the denoiser's LoRA where :meth:`load_lora` reads it: the diffusers format of the pipeline
        class (``pipe.load_lora_weights(directory)`` of the stock pipeline reads it), or peft's format
        (weights and ``adapter_config.json``) for a pipeline without a LoRA loader. A sharded denoiser's
        weights come gathered in ``full_state`` (its full state dict)."""
        from .lora import export_lora, export_peft_lora

        transformer = transformer if transformer is not None else self.transformer
        if self.has_lora_loader(self.pipe):
            return export_lora(self.pipe, transformer, directory, full_state=full_state)
        return export_peft_lora(transformer, directory, full_state=full_state)

    @classmethod
    def load_lora(cls, pipe: Any, lora_dir: str | Path) -> Any:
        """``pipe`` with the LoRA exported by :meth:`export_lora` loaded on its denoiser (not fused)."""
        from .lora import load_peft_lora

        if cls.has_lora_loader(pipe):
            pipe.load_lora_weights(str(lora_dir))
        else:
            load_peft_lora(getattr(pipe, cls.denoiser_name), lora_dir)
        return pipe

    @classmethod
    def merge_lora(cls, pipe: Any, lora_dir: str | Path) -> Any:
        """``pipe`` with the exported LoRA in ``lora_dir`` fused into its weights and the adapter removed, so
        ``pipe.save_pretrained`` writes a plain pipeline its stock class loads."""
        from .lora import merge_peft_lora

        cls.load_lora(pipe, lora_dir)
        if cls.has_lora_loader(pipe):
            pipe.fuse_lora()
            pipe.unload_lora_weights()
        else:
            merge_peft_lora(getattr(pipe, cls.denoiser_name))
        return pipe

    # ------------------------------------------------------------------ options
    @classmethod
    def option_names(cls) -> list[str]:
        """The keyword options ``__init__`` accepts (the family's ``model.options``)."""
        params = inspect.signature(cls.__init__).parameters.values()
        return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming an option this family does not have."""
        known = set(cls.option_names())
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"model family {cls.family!r} has no option {unknown[0]!r}; its options: "
                             f"{', '.join(sorted(known))}")


_FAMILIES: dict[str, type[ModelAdapter]] = {}
_BY_PIPELINE: dict[str, str] = {}


def register_adapter(family: str, *pipeline_classes: str) -> Callable[[type[ModelAdapter]], type[ModelAdapter]]:
    """Class decorator: register an adapter as ``family``, serving the diffusers pipelines named
    ``pipeline_classes`` (``model_index.json``'s ``_class_name``)."""
    def wrap(cls: type[ModelAdapter]) -> type[ModelAdapter]:
        if not (isinstance(cls, type) and issubclass(cls, ModelAdapter)):
            raise TypeError(f"{cls!r} is not a ModelAdapter subclass")
        if cls.media_kind not in MEDIA_KINDS:
            raise ValueError(f"{cls.__name__}.media_kind {cls.media_kind!r} is not one of {MEDIA_KINDS}")
        if family in _FAMILIES and _FAMILIES[family] is not cls:
            raise ValueError(f"a model family named {family!r} is already registered")
        for name in pipeline_classes:
            if _BY_PIPELINE.get(name, family) != family:
                raise ValueError(f"pipeline class {name} is already served by family {_BY_PIPELINE[name]!r}")
        cls.family, cls.pipeline_classes = family, tuple(pipeline_classes)
        _FAMILIES[family] = cls
        _BY_PIPELINE.update(dict.fromkeys(pipeline_classes, family))
        return cls
    return wrap


def family_names() -> list[str]:
    """Registered model families, sorted."""
    return sorted(_FAMILIES)


def adapter_class(family: str) -> type[ModelAdapter]:
    """The adapter registered as ``family``; an unknown name lists the registered ones."""
    if family not in _FAMILIES:
        raise KeyError(f"unknown model family {family!r}; available: {AUTO_FAMILY}, {', '.join(family_names())}")
    return _FAMILIES[family]


def served_family(pipeline_class: str) -> str | None:
    """The family serving a pipeline class, or None when no registered family does."""
    return _BY_PIPELINE.get(pipeline_class)


def family_of_pipeline(pipeline_class: str) -> str:
    """The family serving a diffusers pipeline class name (``model_index.json``'s ``_class_name``)."""
    if pipeline_class not in _BY_PIPELINE:
        served = ", ".join(f"{p} ({f})" for p, f in sorted(_BY_PIPELINE.items()))
        raise KeyError(f"no model family serves {pipeline_class}; served pipelines: {served}")
    return _BY_PIPELINE[pipeline_class]


def resolve_family(family: str, pipe: Any) -> type[ModelAdapter]:
    """The adapter class for a loaded pipeline: ``family`` itself (checked against the pipeline's class
    when that class is registered), or the pipeline's own family for ``"auto"``."""
    pipeline_class = type(pipe).__name__
    if family == AUTO_FAMILY:
        return adapter_class(family_of_pipeline(pipeline_class))
    cls = adapter_class(family)
    owner = _BY_PIPELINE.get(pipeline_class)
    if owner is not None and owner != family:
        raise ValueError(f"model family {family!r} does not serve a {pipeline_class} (family {owner!r} does; "
                         f"set model.family={owner} or auto)")
    return cls


def build_adapter(family: str, pipe: Any, **options: Any) -> ModelAdapter:
    """The adapter of ``family`` (or ``"auto"``: the pipeline's own) around a loaded pipeline.

    Options left at ``None`` are dropped, so a family gets its own defaults; unknown options raise
    ``ValueError`` naming them.
    """
    cls = resolve_family(family, pipe)
    options = {k: v for k, v in options.items() if v is not None}
    cls.check_options(options)
    return cls(pipe, **options)


def place_module(module: torch.nn.Module, device: torch.device | str, dtype: torch.dtype) -> None:
    """Move ``module`` to ``device`` and cast it only if its dtype differs (diffusers warns on every cast)."""
    module.to(device)
    param = next(module.parameters(), None)
    if param is not None and param.dtype != dtype:
        module.to(dtype=dtype)
