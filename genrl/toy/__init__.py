"""The embedded toy world: tiny pretrained models (an SD3-architecture pipeline, a CLIP, an artifact
detector) shipped as package data, their pretraining and the evaluation. The world itself (renderer,
prompts, verifier) lives in :mod:`rewards.toyworld`, so the rewards use it without genrl; its names
are re-exported here."""

from rewards.toyworld import (
    COLORS,
    FAMILIES,
    RELATIONS,
    SHAPES,
    ObjectSpec,
    PromptSpec,
    Verdict,
    detect,
    load_prompt_file,
    render,
    render_batch,
    sample_specs,
    split,
    verify,
)

__all__ = ["COLORS", "FAMILIES", "RELATIONS", "SHAPES", "ObjectSpec", "PromptSpec", "Verdict", "detect",
           "load_prompt_file", "render", "render_batch", "sample_specs", "split", "verify"]
