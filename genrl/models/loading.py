"""Loading diffusers pipelines by hub id or local directory, with errors that say what to do."""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffusers import DiffusionPipeline

from genrl.config import (
    TOY_AUDIO_MODEL_ALIASES,
    TOY_EDIT_MODEL_ALIASES,
    TOY_MODEL_ALIASES,
    TOY_VIDEO_MODEL_ALIASES,
    is_local_model_path,
    local_pipeline_problem,
)

#: Names that refer to the pipeline shipped inside the package.
TOY_ALIASES = TOY_MODEL_ALIASES


def resolve_model_path(model: str | os.PathLike | None) -> str:
    """Map ``None``/``"toy"`` to the shipped toy pipeline; check local directories; pass hub ids through.

    The rules are the config check's (:func:`genrl.config.local_pipeline_problem`), so a value
    ``model.pretrained`` accepts is one this loads.
    """
    from genrl.toy.audio_pipeline import TOY_AUDIO_PIPELINE_DIR
    from genrl.toy.edit_pipeline import TOY_EDIT_PIPELINE_DIR
    from genrl.toy.pipeline import TOY_PIPELINE_DIR
    from genrl.toy.video_pipeline import TOY_VIDEO_PIPELINE_DIR

    shipped = ((TOY_ALIASES, TOY_PIPELINE_DIR, "the toy pipeline", "pretrain_toy.py"),
               (TOY_EDIT_MODEL_ALIASES, TOY_EDIT_PIPELINE_DIR, "the toy edit pipeline", "pretrain_toy_edit.py"),
               (TOY_AUDIO_MODEL_ALIASES, TOY_AUDIO_PIPELINE_DIR, "the toy audio pipeline", "pretrain_toy_audio.py"),
               (TOY_VIDEO_MODEL_ALIASES, TOY_VIDEO_PIPELINE_DIR, "the toy video pipeline", "pretrain_toy_video.py"))
    for aliases, folder, name, script in shipped:
        if model is None and folder == TOY_PIPELINE_DIR or str(model) in aliases:
            if not (folder / "model_index.json").is_file():
                raise FileNotFoundError(f"{name} is missing from {folder}; recreate it with `python scripts/{script}`")
            return str(folder)
    text = str(model)
    problem = local_pipeline_problem(text)
    if problem:
        raise FileNotFoundError(problem)
    return str(Path(text).expanduser()) if is_local_model_path(text) else text


def absent_components(location: str | os.PathLike) -> dict[str, None]:
    """Components a local pipeline was saved without (``[null, null]`` in model_index.json).

    diffusers still expects such a component to be passed explicitly (as in
    ``from_pretrained(sd3_id, text_encoder_3=None, tokenizer_3=None)``), so we pass ``None`` for it: a pipeline
    saved without its T5 (an SD3.5 run that dropped it, or a toy pipeline from before the null T5) still loads.
    """
    index = Path(location) / "model_index.json"
    if not index.is_file():
        return {}
    entries = json.loads(index.read_text(encoding="utf-8"))
    return {k: None for k, v in entries.items() if isinstance(v, list) and v == [None, None]}


#: File name of a LoRA adapter in the diffusers format (what the trainer's ``final/lora`` holds).
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


def load_pipeline(model: str | os.PathLike | None = None, *, lora: str | os.PathLike | None = None,
                  trust_remote_code: bool = False, **kwargs):
    """Load a diffusers pipeline from a hub id or a local directory (``None`` or ``"toy"``: the toy pipeline).

    A hub id is first looked up in the local cache only when ``HF_HUB_OFFLINE=1``; if it cannot
    be reached the error names the id and how to make it available offline. ``lora`` is a directory
    holding a diffusers-format adapter (a training run's ``final/lora``), loaded on top.
    """
    from .lora import PEFT_LORA_WEIGHTS

    if lora is not None and not any((Path(lora) / name).is_file() for name in (LORA_WEIGHTS_NAME, PEFT_LORA_WEIGHTS)):
        raise FileNotFoundError(f"LoRA directory {str(lora)!r} has no {LORA_WEIGHTS_NAME} (nor peft's "
                                f"{PEFT_LORA_WEIGHTS}); pass a training run's final/lora or a checkpoint's lora "
                                "directory")
    pipe = _load(resolve_model_path(model), trust_remote_code, kwargs)
    if lora is not None:
        from .base import adapter_class, served_family

        family = served_family(type(pipe).__name__)
        if family is None:  # a pipeline no genrl family serves: diffusers' own loader
            pipe.load_lora_weights(str(lora))
        else:  # the family knows its LoRA format (diffusers, or peft for a pipeline without a loader)
            adapter_class(family).load_lora(pipe, lora)
    return pipe


def _load(location: str, trust_remote_code: bool, kwargs: dict):
    kwargs = {**absent_components(location), **kwargs}
    try:
        return DiffusionPipeline.from_pretrained(location, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as err:
        if Path(location).is_dir():
            raise
        raise OSError(
            f"could not load the pipeline {location!r}: {err}\n"
            f"Download it where you have network access (`huggingface-cli download {location}`) and copy the "
            "cache, or pass a local directory made with `save_pretrained`."
        ) from err
