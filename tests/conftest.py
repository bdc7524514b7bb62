import os

# The suite never touches the network: every model is built from a config or loaded from package data.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def toy_pipe():
    from genrl.toy.pipeline import load_toy_pipeline

    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def video_text_model_dir(tmp_path_factory):
    """A tiny randomly initialised toy video-text model (and its tokenizer) saved the way the shipped one is."""
    from genrl.toy.video_text import build_video_text_model, save_video_text_model, video_text_tokenizer

    path = tmp_path_factory.mktemp("video-text") / "model"
    tokenizer = video_text_tokenizer()
    save_video_text_model(build_video_text_model(tokenizer, seed=3), tokenizer, path)
    return path
