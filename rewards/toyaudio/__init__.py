"""The toy audio world: one-second 8 kHz clips of sine, square and plucked notes and drum hits (``world``),
prompts in six families and their splits (``prompts``), the synthesiser (``render``) and the analytic verifier
(``verifier``). numpy only, so the verifier reward runs without genrl or torch audio libraries. The world's
reward models ship here too: the toy CLAP (a transformers ``ClapModel`` folder, made by
``scripts/train_toy_clap.py``) and an aesthetics-style predictor on it (``scripts/train_audio_aesthetic.py --toy``)."""

from pathlib import Path

from .prompts import all_specs, spec_from_prompt, split
from .render import render, render_batch
from .verifier import DetectedEvent, Verdict, detect, verify
from .world import FAMILIES, NUM_SAMPLES, SAMPLE_RATE, AudioSpec, EventSpec

#: The shipped toy CLAP (``ClapModel`` and ``ClapProcessor`` folder)
TOY_CLAP_DIR = Path(__file__).resolve().parent / "assets" / "toy-clap"
#: The shipped toy aesthetics-style predictor (``audio_aesthetic`` with ``predictor: toy``), made by
#: ``scripts/train_audio_aesthetic.py --toy``
TOY_AUDIO_AESTHETIC_DIR = Path(__file__).resolve().parent / "assets" / "toy-audio-aesthetic"

__all__ = ["FAMILIES", "NUM_SAMPLES", "SAMPLE_RATE", "TOY_AUDIO_AESTHETIC_DIR", "TOY_CLAP_DIR", "AudioSpec", "DetectedEvent", "EventSpec", "Verdict",
           "all_specs", "detect", "render", "render_batch", "spec_from_prompt", "split", "verify"]
