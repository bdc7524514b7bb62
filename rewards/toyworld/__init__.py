"""The toy world's description, shared by the rewards and the trainer: scenes of coloured shapes
(``world``), GenEval-style prompts and splits (``prompts``), the renderer (``render``) and the analytic
verifier (``verifier``). It needs numpy and scipy only, so the toy verifier reward runs without genrl.
The world's reward models ship here too: the toy CLIP (open_clip ``local-dir:`` layout, made by
``scripts/train_toy_clip.py``) and the toy artifact detector (``scripts/train_artifact_detector.py``)."""

from pathlib import Path

from .prompts import load_prompt_file, sample_specs, split
from .render import render, render_batch
from .verifier import Verdict, detect, verify
from .world import COLORS, FAMILIES, RELATIONS, SHAPES, ObjectSpec, PromptSpec

#: The shipped reward models of the toy world.
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TOY_CLIP_DIR = ASSETS_DIR / "toy-clip"
TOY_ARTIFACT_DETECTOR_DIR = ASSETS_DIR / "toy-artifact-detector"

__all__ = ["ASSETS_DIR", "COLORS", "FAMILIES", "RELATIONS", "SHAPES", "TOY_ARTIFACT_DETECTOR_DIR", "TOY_CLIP_DIR", "ObjectSpec", "PromptSpec", "Verdict", "detect",
           "load_prompt_file", "render", "render_batch", "sample_specs", "split", "verify"]
