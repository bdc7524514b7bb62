"""The model family's adapter built from an experiment config's ``model`` and ``sample`` sections, with config
errors that name the key (shared by the trainer and the scripts that sample a config's model)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from genrl.config import ConfigError, ExperimentConfig, ModelConfig

from .base import ModelAdapter, build_adapter, resolve_family

T = TypeVar("T")

#: ``model`` keys every config has that only some families take as adapter options
SIZE_AND_TEXT_KEYS = ("max_sequence_length", "height", "width")


def adapter_from_config(cfg: ExperimentConfig, pipe: Any) -> ModelAdapter:
    """The adapter of ``model.family`` (``auto``: the pipeline's) with ``sample.guidance_scale``, the size and text
    keys the family has, and ``model.options``; a problem is a :class:`ConfigError` naming its key."""
    m = cfg.model
    family = config_check(lambda: resolve_family(m.family, pipe), "model.family")
    options = dict(family_keyword_options(m, family))
    return config_check(lambda: build_adapter(m.family, pipe, guidance_scale=cfg.sample.guidance_scale, **options,
                                          **m.options), "model.options" if m.options else "model.family")


def family_keyword_options(m: ModelConfig, family: type[ModelAdapter]) -> dict[str, Any]:
    """``model.max_sequence_length`` / ``height`` / ``width`` for the adapter: a family without such an option
    (Stable Audio has no image size, Qwen-Image-Edit no T5) gets none of those left at their defaults, and a
    config error names a key that was set for it."""
    accepted, defaults = set(family.option_names()), ModelConfig()
    options = {}
    for key in SIZE_AND_TEXT_KEYS:
        value = getattr(m, key)
        if key in accepted:
            options[key] = value
        elif value != getattr(defaults, key):
            raise ConfigError(f"model.{key}={value!r}: model family {family.family!r} has no such option "
                              f"(its options: {', '.join(sorted(accepted))})")
    return options


def config_check(build: Callable[[], T], key: str) -> T:
    """``build()``, with a ``KeyError`` / ``ValueError`` it raises turned into a :class:`ConfigError` on ``key``."""
    try:
        return build()
    except (KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise ConfigError(f"{key}: {message}") from None
