"""A cache of prompt embeddings across epochs, so a fixed prompt set is encoded once per run.

RL revisits the same prompts every few epochs, and for the large families the text encoders (T5-XXL, UMT5)
cost as much as several denoiser steps; with ``sample.cache_prompt_embeddings`` each prompt is encoded the
first time it is sampled (once per guidance scale: the CFG batch adds negative embeddings) and its
conditioning is kept on the CPU, one row per prompt, to be stacked into later batches. Only families whose
conditioning is a fixed-length row per prompt (``ModelAdapter.prompt_embeddings_cacheable``) cache:
editing families condition on images and pad their VL embeddings per batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .base import ModelAdapter


def cat_conditioning(parts: Sequence[Any]) -> Any:
    """Stack conditionings of the same class along the batch: every tensor field is concatenated, except the
    class's ``shared_fields`` (the same for every row, e.g. FLUX's text position ids), taken from the first."""
    cls = type(parts[0])
    shared = getattr(cls, "shared_fields", ())
    values = {}
    for f in dataclasses.fields(cls):
        column = [getattr(p, f.name) for p in parts]
        if column[0] is None or f.name in shared:
            values[f.name] = column[0]
        else:
            values[f.name] = torch.cat(column)
    return cls(**values)


def move_conditioning(cond: Any, device: torch.device | str) -> Any:
    """The conditioning with every tensor field on ``device``."""
    return dataclasses.replace(cond, **{f.name: getattr(cond, f.name).to(device) for f in dataclasses.fields(cond)
                                        if isinstance(getattr(cond, f.name), torch.Tensor)})


class PromptEmbeddingCache:
    """``encode`` with the adapter's signature, remembering each (prompt, guidance scale)'s conditioning on the
    CPU. ``hits`` and ``misses`` count prompts served from the cache and encoded."""

    def __init__(self, adapter: ModelAdapter) -> None:
        if not adapter.prompt_embeddings_cacheable:
            raise ValueError(f"model family {adapter.family!r} does not cache prompt embeddings (its conditioning "
                             "is not one fixed-length row per prompt)")
        self.adapter = adapter
        self.rows: dict[tuple[str, float | None], Any] = {}
        self.hits = self.misses = 0

    def encode(self, prompts: Sequence[str], guidance_scale: float | None = None,
               conditions: Sequence[Mapping[str, Any]] | None = None) -> Any:
        self.adapter.check_no_conditions(conditions)
        keys = [(p, guidance_scale) for p in prompts]
        new = list(dict.fromkeys(k for k in keys if k not in self.rows))
        if new:
            cond = self.adapter.encode([p for p, _ in new], guidance_scale=guidance_scale)
            for i, key in enumerate(new):
                self.rows[key] = move_conditioning(cond.select(slice(i, i + 1)), "cpu")
        self.misses += len(new)
        self.hits += len(keys) - len(new)
        return move_conditioning(cat_conditioning([self.rows[k] for k in keys]), self.adapter.device)
