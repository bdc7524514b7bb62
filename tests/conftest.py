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
