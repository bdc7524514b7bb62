"""The embedded toy world: a renderer of coloured-shape scenes, GenEval-style prompts, an analytic
verifier, and tiny pretrained models (an SD3-architecture pipeline and a CLIP) shipped as package data."""

from .prompts import load_prompt_file, sample_specs, split
from .render import render, render_batch
from .verifier import Verdict, detect, verify
from .world import COLORS, FAMILIES, RELATIONS, SHAPES, ObjectSpec, PromptSpec

__all__ = ["COLORS", "FAMILIES", "RELATIONS", "SHAPES", "ObjectSpec", "PromptSpec", "Verdict", "detect",
           "load_prompt_file", "render", "render_batch", "sample_specs", "split", "verify"]
