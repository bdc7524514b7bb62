"""The laion_clap backend of the CLAP reward: its safe checkpoint loader, and (with the ``clap`` extra
installed) scores through the real ``CLAP_Module`` on a randomly initialised HTSAT-tiny."""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rewards.clap import load_laion_clap_state_dict

WORKER = Path(__file__).parent / "helpers" / "laion_clap_worker.py"


class _NotATensor:
    """An arbitrary class: unpickling it means running code the file names."""


def _state() -> dict[str, torch.Tensor]:
    return {"audio_branch.w": torch.randn(3, 2), "text_branch.embeddings.word_embeddings.weight": torch.randn(4, 2)}


def test_release_checkpoints_load_without_unpickling_code(tmp_path):
    state = _state()
    ckpt = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 45, "best": np.float64(0.9)}
    ckpt["state_dict"]["module.text_branch.embeddings.position_ids"] = torch.arange(4)[None]
    torch.save(ckpt, tmp_path / "clap.pt")
    loaded = load_laion_clap_state_dict(tmp_path / "clap.pt")
    assert loaded.keys() == state.keys()  # prefix removed, position_ids dropped
    assert all(torch.equal(loaded[k], v) for k, v in state.items())

    save_file(state, tmp_path / "clap.safetensors")
    loaded = load_laion_clap_state_dict(tmp_path / "clap.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_checkpoints_with_arbitrary_objects_need_allow_pickle(tmp_path):
    torch.save({"state_dict": _state(), "args": _NotATensor()}, tmp_path / "clap.pt")
    with pytest.raises(pickle.UnpicklingError, match="allow_pickle"):
        load_laion_clap_state_dict(tmp_path / "clap.pt")
    assert load_laion_clap_state_dict(tmp_path / "clap.pt", allow_pickle=True).keys() == _state().keys()


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="630k-best.pt"):
        load_laion_clap_state_dict(tmp_path / "630k-best.pt")


@pytest.mark.skipif(importlib.util.find_spec("laion_clap") is None, reason='needs the extra: pip install -e ".[clap]"')
def test_laion_clap_score_is_the_packages_audio_text_cosine(tmp_path):
    # a fresh process: laion_clap loads its tokenizers from the hub at import, here from local stand-ins
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(WORKER)], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["weights_equal"]
    scores = torch.tensor(out["scores"])
    torch.testing.assert_close(scores, torch.tensor(out["expected"]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(out["one_at_a_time"]), scores, rtol=1e-4, atol=1e-5)
    assert ((scores >= -1) & (scores <= 1)).all()
    assert not torch.allclose(torch.tensor(out["swapped_prompts"]), scores)  # the text matters
    assert len(out["at_16k"]) == 3 and all(-1 <= s <= 1 for s in out["at_16k"])
    assert out["differentiable"] is False
